"""Where the time of one sentence goes in the packed runtime (batch 1, one thread).

    python benchmarks/profile_sentence.py --models w1a1.beex w1a4.beex w1a32.beex [--sentences 32]

For each packed model, on the first --sentences SST-2 dev sentences tokenized by the model's own tokenizer:
the whole `PackedModel.run` per sentence without and with early exit (fractional entropy, delta 0.05, as
benchmarks/latency.py), then, on the sentence closest to the mean length, each stage of `run` called alone:
the ragged-batch bookkeeping, the embedding, one block (block 1), one exit head and the exit rule's
bookkeeping for one block; and inside that block, each kernel called alone from Python on the block's own
intermediate values (so each includes a numba dispatch, about 1 us, which the fused block call pays once); for a
model on AMX tiles, the block and its GEMMs on the popcount kernels too, in the same run on the same values.
Times are the minimum over 150 windows of about 0.3 ms each: on a shared machine that is the uncontended cost,
the same statistic for every row. Run it with PYTHONPATH pointing at another source tree to profile that
engine (the kernels are reached through the block's objects, which both old and new engines have).
Writes --out (JSON) and the same name with .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="packed model files")
    p.add_argument("--sentences", type=int, default=32)
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", str(HERE.parent.parent / "shared/data/glue")))
    p.add_argument("--out", default=str(HERE / "results" / "profile_sentence.json"))
    return p.parse_args()


def best_us(fn, windows: int = 150, window_s: float = 3e-4) -> float:
    """Minimum over `windows` timing windows of about window_s each, in microseconds per call."""
    fn()
    start = time.perf_counter()
    fn()
    reps = max(1, int(window_s / max(time.perf_counter() - start, 1e-7)))
    best = float("inf")
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return 1e6 * best


def _width(x: np.ndarray, k: int) -> np.ndarray:
    """x's values repeated or cut to k columns: an input of the right shape for a layer (timing only)."""
    return x if x.shape[1] == k else np.ascontiguousarray(np.resize(x, (x.shape[0], k)))


def _bit_serial(ks, linear: tuple, x: np.ndarray, bits: int, tiles: bool) -> tuple[float, float]:
    """The input quantization and the bit-serial GEMM of one linear (with its epilogue), each alone; on AMX
    tiles (`engine.amx`) when the model runs there."""
    w, alpha, corr, bias, step, threshold, offset = linear[:7]  # outlier channels, if any, are not timed
    half_step = step * np.float32(0.5)
    if tiles:
        from beexformer.engine import amx

        codes, _ = amx.SERIAL.quantize_bytes(x, step, threshold, offset, bits, 4 * w.shape[1])
        dots = np.empty((codes.shape[0], 16 * w.shape[0]), dtype=np.int32)

        def gemm():
            amx.SERIAL.gemm_u8(codes, w, dots)
            return amx.SERIAL.planes_affine(dots, x.shape[0], half_step, alpha, corr, bias)

        return best_us(lambda: amx.SERIAL.quantize_bytes(x, step, threshold, offset, bits, 4 * w.shape[1])), best_us(
            gemm
        )
    planes, usum = ks.quantize_rows(x, step, threshold, offset, bits)
    return (
        best_us(lambda: ks.quantize_rows(x, step, threshold, offset, bits)),
        best_us(lambda: ks.bgemm_planes_affine(planes, usum, half_step, w, alpha, corr, bias)),
    )


def block_kernels(model, x: np.ndarray, offsets: np.ndarray) -> dict[str, float]:
    """Each kernel of block 1 alone, on that block's intermediate values."""
    from beexformer.engine import kernels as K

    ks, blk, c = K.SERIAL, model.blocks[0], model.config
    g1, b1 = blk["norm1"]
    out = {"layernorm (one of two)": best_us(lambda: ks.layernorm(x, g1, b1, model.eps))}
    if model.mode == "sign" and "down" in blk:  # BERT's FFN (the SLFN variant is not broken down)
        zero = np.float32(0.0)
        xp, xb = ks.pack_rows(x, zero)
        qkv, o, up, down = blk["qkv"], blk["o"], blk["up"], blk["down"]
        q = ks.bgemm_affine(xp, xb, qkv.bits, qkv.alpha, qkv.crs, qkv.bias, c.d_model)
        ctx = ks.attention(q, offsets, c.n_heads)
        cp, cb = ks.pack_rows(ctx, zero)
        gelu, centre = np.array([K.ACT_GELU], dtype=np.int64), np.zeros(1, dtype=np.float32)
        hw, hb = ks.bgemm_act_pack(xp, xb, up.bits, up.alpha, up.crs, up.bias, c.d_model, gelu, centre)
        out |= {
            "pack signs (one of three)": best_us(lambda: ks.pack_rows(x, zero)),
            "q|k|v XNOR GEMM": best_us(
                lambda: ks.bgemm_affine(xp, xb, qkv.bits, qkv.alpha, qkv.crs, qkv.bias, c.d_model)
            ),
            "attention": best_us(lambda: ks.attention(q, offsets, c.n_heads)),
            "o XNOR GEMM": best_us(lambda: ks.bgemm_affine(cp, cb, o.bits, o.alpha, o.crs, o.bias, c.d_model)),
            "lin1 XNOR GEMM + GELU + pack": best_us(
                lambda: ks.bgemm_act_pack(xp, xb, up.bits, up.alpha, up.crs, up.bias, c.d_model, gelu, centre)
            ),
            "lin2 XNOR GEMM": best_us(
                lambda: ks.bgemm_affine(hw[0], hb[0], down.bits, down.alpha, down.crs, down.bias, c.d_ff)
            ),
        }  # fmt: skip
    elif model.mode == "planes":
        gemm = "AMX tile GEMM" if model.tiles else "bit-serial GEMM"
        for name in ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.lin1", "ffn.lin2"):
            xin = _width(x, c.d_ff if name == "ffn.lin2" else c.d_model)
            out[f"{name} quantize"], out[f"{name} {gemm}"] = _bit_serial(
                ks, blk[name].args, xin, c.act_bits, model.tiles
            )
        qkv = np.concatenate([x, x, x], axis=1)
        out["attention"] = best_us(lambda: ks.attention(qkv, offsets, c.n_heads))
    else:
        for name in ("qkv", "attn.o", "ffn.lin1", "ffn.lin2"):
            linear, xin = blk[name], _width(x, c.d_ff if name == "ffn.lin2" else c.d_model)
            out[f"{name} linear"] = best_us(lambda linear=linear, xin=xin: linear(xin))
        hidden = blk["ffn.lin1"](x)
        out["GELU"] = best_us(lambda: ks.gelu_rows(hidden))
        qkv = blk["qkv"](x)
        out["attention"] = best_us(lambda: ks.attention(qkv, offsets, c.n_heads))
    return out


def _mean_sentence_us(model, ids: list, segs: list, rule) -> float:
    """`run` on one sentence at a time: the mean over sentences of each one's minimum over 30 windows."""
    return float(
        np.mean([best_us(lambda i=i: model.run([ids[i]], [segs[i]], rule), windows=30) for i in range(len(ids))])
    )


def profile(path: str, texts: list[str]) -> dict:
    from beexformer.engine.runtime import PackedModel
    from beexformer.exits import ExitTracker, FractionalEntropy

    model = PackedModel.load(path)
    rule = FractionalEntropy(0.05)
    ids, segs = model.encode(texts)
    for i in range(len(ids)):  # compile (or load the cache) and warm up
        model.run([ids[i]], [segs[i]], rule)
        model.run([ids[i]], [segs[i]])
    whole = {name: _mean_sentence_us(model, ids, segs, r) for name, r in (("no exit", None), ("early exit", rule))}
    exits = [int(model.run([ids[i]], [segs[i]], rule).exit_block[0]) for i in range(len(ids))]
    lengths = [len(s) for s in ids]
    pick = int(np.argmin([abs(n - np.mean(lengths)) for n in lengths]))
    one, one_seg = [ids[pick]], [segs[pick]]
    flat, positions, seg, offsets = model._ragged(one, one_seg)
    x = model._embed(flat, positions, seg)
    after = model._block(0, x, offsets)
    logits = model._exit(0, after, offsets)

    def track_one_block():
        tracker = ExitTracker(rule, 1, model.config.n_blocks, model.config.n_classes)
        tracker.step(logits)

    stages = {
        "ragged batch": best_us(lambda: model._ragged(one, one_seg)),
        "embedding": best_us(lambda: model._embed(flat, positions, seg)),
        "one block": best_us(lambda: model._block(0, x, offsets)),
        "one exit head": best_us(lambda: model._exit(0, after, offsets)),
        "exit rule bookkeeping, one block": best_us(track_one_block),
    }
    kernels = block_kernels(model, x, offsets)
    if model.tiles:  # the popcount kernels the tiles replace, timed in the same run on the same values
        plain = PackedModel.load(path, tiles=False)
        stages["one block, popcount kernels instead of tiles"] = best_us(lambda: plain._block(0, x, offsets))
        kernels |= {k: v for k, v in block_kernels(plain, x, offsets).items() if k.endswith("bit-serial GEMM")}
    return {"mode": model.mode, "mean_tokens": float(np.mean(lengths)), "profiled_tokens": lengths[pick],
            "mean_exit_block": float(np.mean(exits)), "sentence_us": whole, "stages_us": stages,
            "block_kernels_us": kernels}  # fmt: skip


def render(report: dict) -> str:
    lines = [f"command: `{report['command']}`", f"engine: {report['engine']}; CPU: {report['cpu']}; one thread", ""]
    for name, r in report["models"].items():
        s = r["sentence_us"]
        lines += [
            f"**{name}** ({r['mode']}; {r['mean_tokens']:.1f} tokens on average, profiled sentence "
            f"{r['profiled_tokens']}; mean exit block {r['mean_exit_block']:.2f}): a sentence {s['no exit']:.0f} us "
            f"without exit, {s['early exit']:.0f} us with early exit",
            "",
            "| stage | us |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v:.1f} |" for k, v in r["stages_us"].items()]
        lines += [f"| block 1: {k} | {v:.1f} |" for k, v in r["block_kernels_us"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    threadpool_limits(1)
    import beexformer
    from beexformer.data.glue import get_task, load_split
    from beexformer.engine.cpu import model_name

    texts = [e.text_a for e in load_split(get_task("sst2"), "dev", args.data_dir)[: args.sentences]]
    report = {
        "command": "python benchmarks/profile_sentence.py " + " ".join(sys.argv[1:]),
        "engine": str(Path(beexformer.__file__).resolve().parent.parent),
        "cpu": model_name(),
        "statistic": "minimum over 150 windows of ~0.3 ms (sentences: mean over sentences of the minimum over 30)",
        "models": {Path(p).name: profile(p, texts) for p in args.models},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(report) + "\n")
    print(render(report))


if __name__ == "__main__":
    main()
