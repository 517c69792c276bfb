"""End-to-end latency of the packed 1-bit runtime against PyTorch float32, measured together in one run.

    python benchmarks/latency.py [--w1a1-run RUN_DIR] [--w1a32-run RUN_DIR] [--threads N] [--reps 7]

For each of W1A1 and W1A32 the same architecture runs in three forms: the packed file in the numpy/numba
runtime; PyTorch float32 with the *same weights made float* (`BEExformer.float_twin`: alpha * sign(W) stored
as float32, so the two compute the same function); and (for reference) the PyTorch binarized model itself,
whose binary ops are simulated in float. Inputs are SST-2 dev sentences (first --sentences of them)
tokenized with the model's tokenizer, run one at a time (batch 1) and in batches of 64 sorted by length,
without early exit (every block, every exit head) and with the paper's rule (fractional entropy, delta =
0.05; PyTorch: `early_exit`). Times are medians over --reps interleaved repetitions; the tables print ratios
(PyTorch time / packed time), never absolute times alone, because the machine is shared. Timings start from
token ids (tokenization costs the same for both and is reported separately).

Without a trained run a variant uses random weights: speed does not depend on training, but early exit does
(a random model's exits are arbitrary), so the early-exit rows are only meaningful with --*-run.

Also: the kernel-level GEMM table (`benchmarks/gemm.py`) and the CPU's flags. Writes
benchmarks/results/latency.json and latency.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--w1a1-run", help="trained W1A1 run or model directory (default: random weights)")
    parser.add_argument("--w1a32-run", help="trained W1A32 run or model directory (default: random weights)")
    parser.add_argument("--threads", type=int, default=1, help="threads for PyTorch, numpy's BLAS and numba")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions (median)")
    parser.add_argument("--sentences", type=int, default=128, help="SST-2 dev sentences to run")
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", str(HERE.parent.parent / "shared/data/glue")))
    parser.add_argument("--out", default=str(HERE / "results" / "latency.json"))
    parser.add_argument("--skip-gemm", action="store_true")
    parser.add_argument("--skip-simulated", action="store_true", help="skip the PyTorch binarized model")
    return parser.parse_args()


ARGS = parse_args()
# BLAS thread pools read these once, at import: set them before numpy and torch load.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(HERE))
from beexformer.config import BEExformerConfig  # noqa: E402
from beexformer.data.collate import pad_sequences  # noqa: E402
from beexformer.engine import cpu  # noqa: E402
from beexformer.engine.export import export_model  # noqa: E402
from beexformer.engine.runtime import PackedModel  # noqa: E402
from beexformer.engine.threads import set_threads  # noqa: E402
from beexformer.exits import FractionalEntropy  # noqa: E402
from beexformer.model import BEExformer  # noqa: E402
from gemm import bench_gemm, gemm_table  # noqa: E402


def load_variant(name: str, run: str | None, act_bits: int, workdir: Path):
    """(PyTorch binarized model, its float twin, packed runtime, encode(texts) -> ids, segs, source)."""
    from beexformer.data.tokenizer import TextEncoder

    if run:
        from beexformer.bundle import load_model_dir, resolve_model_dir

        model, encoder, info = load_model_dir(run)
        tok_dir, source, max_len = resolve_model_dir(run), str(run), info.max_len
    else:
        torch.manual_seed(0)
        model = BEExformer(BEExformerConfig(act_bits=act_bits)).eval()
        texts = [line.split("\t")[0] for line in _dev_lines()]
        encoder = TextEncoder.train_wordpiece(texts * 4, vocab_size=model.config.vocab_size)
        tok_dir, source, max_len = encoder.save(workdir / f"{name}-tokenizer"), "random weights", 128
    path = export_model(model, tok_dir, workdir / f"{name}.beex", task_info={"max_len": max_len})
    packed = PackedModel.load(path)
    return model.eval(), model.float_twin().eval(), packed, source, path


def _dev_lines() -> list[str]:
    path = Path(ARGS.data_dir) / "SST-2" / "dev.tsv"
    if not path.is_file():
        raise SystemExit(f"{path} not found (set --data-dir or GLUE_DIR)")
    return path.read_text().splitlines()[1:]


def measure(model, twin, packed, texts: list[str], reps: int, with_simulated: bool) -> dict:
    rule = FractionalEntropy(0.05)
    t0 = time.perf_counter()
    ids, segs = packed.encode(texts)
    tokenize_s = time.perf_counter() - t0
    order = np.argsort([len(s) for s in ids], kind="stable")
    batches = {
        1: [([ids[i]], [segs[i]]) for i in range(len(ids))],
        64: [
            ([ids[i] for i in order[s : s + 64]], [segs[i] for i in order[s : s + 64]]) for s in range(0, len(ids), 64)
        ],
    }
    torch_batches = {b: [pad_sequences(i, s) for i, s in group] for b, group in batches.items()}
    results = {}
    for batch_size in (1, 64):
        group, tgroup = batches[batch_size], torch_batches[batch_size]

        def torch_full(m, tgroup=tgroup):
            with torch.no_grad():
                for args in tgroup:
                    m(*args)

        def torch_ee(m, tgroup=tgroup):
            for args in tgroup:
                m.early_exit(*args, rule)

        candidates = {
            "torch_f32": lambda: torch_full(twin),
            "torch_f32_ee": lambda: torch_ee(twin),
            "packed": lambda group=group: [packed.run(i, s) for i, s in group],
            "packed_ee": lambda group=group: [packed.run(i, s, rule) for i, s in group],
        }
        if with_simulated:
            candidates["torch_binary_sim"] = lambda: torch_full(model)
            candidates["torch_binary_sim_ee"] = lambda: torch_ee(model)
        for fn in candidates.values():  # warm-up: JIT, caches, allocator
            fn()
        times = {name: [] for name in candidates}
        for _ in range(reps):
            for name, fn in candidates.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        med = {name: float(np.median(t)) for name, t in times.items()}
        exit_blocks = np.concatenate([packed.run(i, s, rule).exit_block for i, s in group])
        results[batch_size] = {
            "median_seconds": med,
            "float_over_packed": med["torch_f32"] / med["packed"],
            "float_ee_over_packed_ee": med["torch_f32_ee"] / med["packed_ee"],
            "float_over_packed_ee": med["torch_f32"] / med["packed_ee"],
            "mean_exit_block": float(exit_blocks.mean()),
        }
        if with_simulated:
            results[batch_size]["simulated_over_packed"] = med["torch_binary_sim"] / med["packed"]
    return {"tokenize_seconds": tokenize_s, "n_sentences": len(texts), "batches": results}


def latency_table(variants: dict) -> str:
    lines = [
        "| variant | batch | mean exit block | f32 / packed, no EE | f32+EE / packed+EE | f32 (no EE) / packed+EE "
        "| simulated binary / packed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        for batch_size, r in v["batches"].items():
            sim = f"{r['simulated_over_packed']:.1f}x" if "simulated_over_packed" in r else "-"
            lines.append(
                f"| {name} ({v['source']}) | {batch_size} | {r['mean_exit_block']:.2f} of {v['n_blocks']} "
                f"| {r['float_over_packed']:.1f}x | {r['float_ee_over_packed_ee']:.1f}x "
                f"| {r['float_over_packed_ee']:.1f}x | {sim} |"
            )
    return "\n".join(lines)


def main() -> None:
    import tempfile

    torch.set_num_threads(ARGS.threads)
    set_threads(ARGS.threads)
    info = cpu.summary()
    print(f"CPU: {info['model']} ({info['llvm_cpu']}), popcount path: {info['popcount_path']}")
    print(f"flags: {' '.join(info['flags'])}")
    print(f"threads: {ARGS.threads}; torch {torch.__version__}; numpy {np.__version__}")
    texts = [line.split("\t")[0] for line in _dev_lines()][: ARGS.sentences]
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run, act_bits in (("W1A1", ARGS.w1a1_run, 1), ("W1A32", ARGS.w1a32_run, 32)):
            model, twin, packed, source, path = load_variant(name, run, act_bits, Path(tmp))
            ckpt = 4 * sum(p.numel() for p in model.parameters())
            print(
                f"{name}: {source}; packed {path.stat().st_size:,} bytes vs float32 {ckpt:,} bytes",
                flush=True,
            )
            result = measure(model, twin, packed, texts, ARGS.reps, not ARGS.skip_simulated)
            result.update(source=source, n_blocks=model.config.n_blocks, config=model.config.to_dict(),
                          packed_bytes=path.stat().st_size, float32_param_bytes=ckpt)  # fmt: skip
            variants[name] = result
    table = latency_table(variants)
    print(table)
    report = {"cpu": info, "threads": ARGS.threads, "torch": torch.__version__, "command": " ".join(sys.argv),
              "variants": variants}  # fmt: skip
    md = [f"CPU: {info['model']} ({info['llvm_cpu']}); popcount: {info['popcount_path']}",
          f"flags: {' '.join(info['flags'])}", f"threads: {ARGS.threads}", "", table]  # fmt: skip
    if not ARGS.skip_gemm:
        rows = bench_gemm(reps=max(10, ARGS.reps), threads=ARGS.threads)
        report["gemm"] = rows
        print(gemm_table(rows))
        md += ["", gemm_table(rows)]
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
