"""Latency of binarized MiniLM-L6 in the packed runtime against ONNX Runtime and PyTorch, in one run.

    python benchmarks/minilm_models.py --out-dir /tmp/beex-minilm          # the models (minutes, see there)
    python benchmarks/latency.py --models /tmp/beex-minilm [--sentences 64] [--reps 5] [--threads 1,2]

On the first --sentences SST-2 dev sentences, tokenized once with the model's WordPiece tokenizer (every
function gets the same token ids; timing runs from token ids to logits), at batch 1 and batch 32 (sorted by
length), with 1 and 2 threads (each function's own pools: torch.set_num_threads, the ONNX Runtime session's
intra-op threads, numba's pool and the BLAS through threadpoolctl), and each without and with early exit (the
fractional-entropy rule, delta 0.05, the paper's; never tuned on dev):

- `pytorch-f32`: the float MiniLM (`float`) in eager PyTorch;
- `ort-f32`, `ort-int8`: the same float model exported to ONNX by this script and run by ONNX Runtime, as it is
  and after `onnxruntime.quantization.quantize_dynamic` (int8 weights, activations quantized on the fly: what
  one deploys for a fast small classifier). With early exit, the model is exported as one graph per block
  (block + its exit; the first also embeds) and the rule runs between them, the batch shrinking as in the
  packed runtime;
- `packed-w1aK`: the packed file of the binarized model at activation width K in the numba runtime;
- `pytorch-w1aK`: the same binarized model in PyTorch (binarization simulated in float): the *same function*
  as `packed-w1aK` (benchmarks/equivalence.py checks it sentence by sentence); one thread, batch 1 only.

Times are medians over --reps interleaved repetitions (every function once per repetition, in turn). Ratios
divide the baseline's time by the packed runtime's, always the same early-exit setting on both sides and the
same threads and batch. The dev metric (accuracy on all 872 SST-2 dev sentences, and the mean exit block with
early exit) is printed beside each row, next to the majority-class baseline. Peak RSS: each runtime answers
the dev set in its own process at batch 1 (`beex predict FILE --file dev.txt` for the packed models; a minimal
onnxruntime + tokenizers script for ONNX; `beex predict MODEL_DIR` for PyTorch): its VmHWM.
Writes benchmarks/results/latency.json and latency.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIDTHS = (1, 2, 4, 32)
DELTA = 0.05
EE_NAME = f"fractional entropy, delta {DELTA}"
MINILM_MODELS = (
    "benchmarks/minilm_models.py: all-MiniLM-L6-v2 binarized without training, exit heads fitted on SST-2 "
    "training sentences"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="directory written by benchmarks/minilm_models.py")
    parser.add_argument("--sentences", type=int, default=64, help="SST-2 dev sentences to time")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--widths", default="1,2,4,32", help="activation widths of the w1aK models to time")
    parser.add_argument("--models-what", default=MINILM_MODELS, help="what the models are (written to the report)")
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", str(HERE.parent.parent / "shared/data/glue")))
    parser.add_argument("--out", default=str(HERE / "results" / "latency.json"))
    parser.add_argument("--dev-sentences", type=int, help="score only the first N dev sentences (a smoke test)")
    parser.add_argument("--work-dir", help="where the ONNX and packed files go (default: a temporary directory)")
    parser.add_argument("--readme", metavar="JSON", help="print the README rows of a results file and exit")
    parser.add_argument("--rss-worker", nargs=3, metavar=("ONNX", "TOKENIZER_DIR", "TEXTS"), help=argparse.SUPPRESS)
    return parser.parse_args()


# ------------------------------------------------------------------------------------------------------------
# peak memory of one runtime answering the dev set in its own process


def ort_rss_worker(onnx_path: str, tokenizer_dir: str, texts_path: str) -> None:
    """What one deploys with ONNX Runtime: tokenizers + onnxruntime + numpy, batch 1, one thread."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    tok.enable_truncation(128)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    for line in Path(texts_path).read_text().splitlines():
        ids = np.array([tok.encode(line).ids], dtype=np.int64)
        session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids})
    report_hwm()


_REPORT_HWM = (
    "import sys\nfrom beexformer.cli.main import main\nrc = main(sys.argv[1:])\n"
    "print('VMHWM', [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0], "
    "file=sys.stderr)\nsys.exit(rc)\n"
)


def report_hwm() -> None:
    """Print this process's peak RSS (VmHWM, KiB). Not getrusage: a child's ru_maxrss starts from the RSS of
    the parent it was forked from (this benchmark holds gigabytes), VmHWM belongs to the exec'd image only."""
    status = Path("/proc/self/status").read_text().splitlines()
    print("VMHWM", [line.split()[1] for line in status if line.startswith("VmHWM")][0], file=sys.stderr)


def peak_rss(command: list[str]) -> int:
    """Peak RSS in bytes of a child process that prints its VmHWM on stderr."""
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-500:]}")
    lines = [line for line in result.stderr.splitlines() if line.startswith("VMHWM")]
    return int(lines[-1].split()[1]) * 1024


def beex(*args: str) -> list[str]:
    """`beex ARGS` in a fresh interpreter that reports its peak RSS at the end."""
    return [sys.executable, "-c", _REPORT_HWM, *args]


# ------------------------------------------------------------------------------------------------------------
# ONNX export of the float model: the whole graph, and one graph per block for early exit


def export_onnx(model, work: Path) -> dict[str, Path]:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class AllExits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids, attention_mask, token_type_ids).exit_logits

    class Segment(torch.nn.Module):
        """Block c and its exit; the first segment embeds the token ids too."""

        def __init__(self, c: int) -> None:
            super().__init__()
            self.model, self.c = model, c

        def forward(self, x, attention_mask, token_type_ids=None):
            if self.c == 0:
                x = self.model.embeddings(x, token_type_ids)
            x = self.model.block(self.c)(x, attention_mask)
            return x, self.model.exits[self.c](x, attention_mask)

    ids = torch.randint(1000, 2000, (2, 9))
    mask, segs = torch.ones_like(ids), torch.zeros_like(ids)
    batch_seq = {0: "batch", 1: "seq"}
    paths = {}

    def export(module, args, names, outputs, axes, name):
        path = work / f"{name}.onnx"
        torch.onnx.export(module, args, str(path), input_names=names, output_names=outputs, dynamic_axes=axes,
                          opset_version=17, dynamo=False)  # fmt: skip
        quantize_dynamic(str(path), str(work / f"{name}.int8.onnx"), weight_type=QuantType.QInt8)
        paths[f"f32:{name}"], paths[f"int8:{name}"] = path, work / f"{name}.int8.onnx"

    with torch.no_grad():
        names = ["input_ids", "attention_mask", "token_type_ids"]
        export(AllExits().eval(), (ids, mask, segs), names, ["exit_logits"],
               {n: batch_seq for n in names} | {"exit_logits": {1: "batch"}}, "full")  # fmt: skip
        hidden = model.embeddings(ids, segs)
        for c in range(model.config.n_blocks):
            inputs = (ids, mask, segs) if c == 0 else (hidden, mask)
            in_names = names if c == 0 else ["hidden", "attention_mask"]
            axes = {n: batch_seq for n in in_names} | {"hidden_out": batch_seq, "logits": {0: "batch"}}
            export(Segment(c).eval(), inputs, in_names, ["hidden_out", "logits"], axes, f"block{c}")
            hidden = model.block(c)(hidden, mask)
    return paths


class OrtModel:
    """The exported float model (f32 or int8) in ONNX Runtime: all exits at once, or block by block with the
    exit rule between blocks and the batch shrinking (the same procedure as the packed runtime)."""

    def __init__(self, paths: dict[str, Path], kind: str, n_blocks: int, n_classes: int, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(name: str):
            return ort.InferenceSession(str(paths[f"{kind}:{name}"]), options, providers=["CPUExecutionProvider"])

        self.full = session("full")
        self.blocks = [session(f"block{c}") for c in range(n_blocks)]
        self.n_blocks, self.n_classes = n_blocks, n_classes

    def exit_logits(self, ids, mask, segs):
        return self.full.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": segs})[0]

    def early_exit(self, ids, mask, segs, rule):
        from beexformer.exits import ExitTracker

        tracker = ExitTracker(rule, len(ids), self.n_blocks, self.n_classes)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": segs}
        for c in range(self.n_blocks):
            hidden, logits = self.blocks[c].run(None, feed)
            keep = tracker.step(logits)
            if tracker.done:
                break
            if not keep.all():
                hidden, mask = hidden[keep], mask[keep]
            feed = {"hidden": hidden, "attention_mask": mask}
        return tracker.decision()


# ------------------------------------------------------------------------------------------------------------
# the measurement


def padded(ids: list, segs: list):
    import numpy as np

    length = max(len(s) for s in ids)
    out = np.zeros((3, len(ids), length), dtype=np.int64)
    for i, (a, b) in enumerate(zip(ids, segs, strict=True)):
        out[0, i, : len(a)], out[1, i, : len(a)], out[2, i, : len(a)] = a, 1, b
    return out[0], out[1], out[2]


def batches(ids: list, segs: list, size: int) -> list[tuple[list, list]]:
    import numpy as np

    order = np.argsort([len(s) for s in ids], kind="stable") if size > 1 else np.arange(len(ids))
    return [([ids[i] for i in order[s : s + size]], [segs[i] for i in order[s : s + size]])
            for s in range(0, len(ids), size)]  # fmt: skip


def functions(models: dict, ort_models: dict, group: list, rule, simulated: bool, widths: list[int]) -> dict:
    """name -> a function running every batch of `group` once (token ids in, logits out)."""
    import torch

    torch_group = [tuple(torch.from_numpy(a) for a in padded(i, s)) for i, s in group]
    np_group = [padded(i, s) for i, s in group]
    fns = {}

    def torch_fn(model, ee):
        def run():
            with torch.no_grad():
                for args in torch_group:
                    model.early_exit(*args, rule) if ee else model(*args)

        return run

    fns["pytorch-f32"], fns["pytorch-f32+ee"] = torch_fn(models["float"], False), torch_fn(models["float"], True)
    for kind, ort_model in ort_models.items():
        fns[f"ort-{kind}"] = lambda m=ort_model: [m.exit_logits(*a) for a in np_group]
        fns[f"ort-{kind}+ee"] = lambda m=ort_model: [m.early_exit(*a, rule) for a in np_group]
    for k in widths:
        packed = models[f"packed-w1a{k}"]
        fns[f"packed-w1a{k}"] = lambda p=packed: [p.run(i, s) for i, s in group]
        fns[f"packed-w1a{k}+ee"] = lambda p=packed: [p.run(i, s, rule) for i, s in group]
        if simulated:
            fns[f"pytorch-w1a{k}"] = torch_fn(models[f"w1a{k}"], False)
            fns[f"pytorch-w1a{k}+ee"] = torch_fn(models[f"w1a{k}"], True)
    return fns


def time_functions(fns: dict, reps: int) -> dict[str, float]:
    import numpy as np

    for fn in fns.values():  # warm-up: JIT, caches, allocators, ORT's first-run planning
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def set_threads(n: int):
    """Every pool to n threads; returns the threadpoolctl context that holds the BLAS at n."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return threadpool_limits(n)


def dev_metrics(models: dict, ort_models: dict, ids: list, segs: list, labels, rule, widths: list[int]) -> dict:
    """Accuracy on the whole dev set, without and with early exit, and the mean exit block, per function."""
    import numpy as np
    import torch

    out = {}

    def record(name, no_ee_logits, ee_predictions, ee_blocks):
        out[name] = {"accuracy": float((no_ee_logits.argmax(-1) == labels).mean())}
        out[f"{name}+ee"] = {"accuracy": float((ee_predictions == labels).mean()),
                             "mean_exit_block": float(np.mean(ee_blocks))}  # fmt: skip

    group = batches(ids, segs, 32)
    index = np.argsort([len(s) for s in ids], kind="stable")
    model = models["float"]
    full, pred, blocks = [], [], []
    with torch.no_grad():
        for i, s in group:
            args = tuple(torch.from_numpy(a) for a in padded(i, s))
            full.append(model(*args).exit_logits[-1].numpy())
            decision = model.early_exit(*args, rule)
            pred.append(np.asarray(decision.predictions))
            blocks.append(np.asarray(decision.exit_block))
    record("pytorch-f32", *(_unsort(np.concatenate(a), index) for a in (full, pred, blocks)))
    for kind, m in ort_models.items():
        full, pred, blocks = [], [], []
        for i, s in group:
            args = padded(i, s)
            full.append(m.exit_logits(*args)[-1])
            decision = m.early_exit(*args, rule)
            pred.append(np.asarray(decision.predictions))
            blocks.append(np.asarray(decision.exit_block))
        record(f"ort-{kind}", *(_unsort(np.concatenate(a), index) for a in (full, pred, blocks)))
    for k in widths:
        packed = models[f"packed-w1a{k}"]
        no_ee = packed.run(ids, segs)
        ee = packed.run(ids, segs, rule)
        record(f"packed-w1a{k}", no_ee.logits, ee.predictions, ee.exit_block)
    return out


def _unsort(values, index):
    import numpy as np

    out = np.empty_like(values)
    out[index] = values
    return out


def main() -> None:
    args = parse_args()
    if args.rss_worker:
        ort_rss_worker(*args.rss_worker)
        return
    if args.readme:
        print(readme_rows(json.loads(Path(args.readme).read_text()), args.readme))
        return
    if not args.models:
        raise SystemExit("--models DIR is required (make it with benchmarks/minilm_models.py)")
    import numpy as np

    from beexformer.bundle import load_model_dir
    from beexformer.data.glue import get_task, load_split
    from beexformer.engine import cpu
    from beexformer.engine.export import export_model
    from beexformer.engine.runtime import PackedModel
    from beexformer.exits import FractionalEntropy

    models_dir = Path(args.models)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="beex-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    rule = FractionalEntropy(DELTA)
    info = cpu.summary()
    print(f"CPU: {info['model']} ({info['llvm_cpu']}); popcount path: {info['popcount_path']}; "
          f"bit-serial linears on AMX tiles: {'yes' if info['amx_tiles'] else 'no'}")  # fmt: skip
    print(f"flags: {' '.join(info['flags'])}", flush=True)

    widths = [k for k in WIDTHS if str(k) in args.widths.split(",")]
    if not widths or len(widths) != len(args.widths.split(",")):
        raise SystemExit(f"--widths: a subset of {','.join(map(str, WIDTHS))}, got {args.widths}")
    models, sizes = {}, {}
    float_model, encoder, task_info = load_model_dir(models_dir / "float")
    models["float"] = float_model
    for k in widths:
        model, _, task_info = load_model_dir(models_dir / f"w1a{k}")
        models[f"w1a{k}"] = model
        path = export_model(model, models_dir / f"w1a{k}", work / f"w1a{k}.beex", task_info=task_info.__dict__)
        models[f"packed-w1a{k}"] = PackedModel.load(path)
        sizes[f"packed-w1a{k}"] = path.stat().st_size
    paths = export_onnx(float_model, work)
    sizes["onnx-f32"], sizes["onnx-int8"] = paths["f32:full"].stat().st_size, paths["int8:full"].stat().st_size
    print("sizes (bytes):", sizes, flush=True)

    examples = load_split(get_task("sst2"), "dev", args.data_dir)[: args.dev_sentences]
    texts = [e.text_a for e in examples]
    labels = np.array([int(e.label) for e in examples])
    ids, segs = models[f"packed-w1a{widths[0]}"].encode(texts, None)  # the same WordPiece ids for every function
    majority = float(max(labels.mean(), 1 - labels.mean()))
    n_blocks, n_classes = float_model.config.n_blocks, float_model.config.n_classes

    set_threads(1)
    ort_1 = {kind: OrtModel(paths, kind, n_blocks, n_classes, 1) for kind in ("f32", "int8")}
    metrics = dev_metrics(models, ort_1, ids, segs, labels, rule, widths)
    print("dev accuracy:", {k: round(v["accuracy"], 4) for k, v in metrics.items()}, flush=True)

    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        limits = set_threads(threads)
        ort_models = ort_1 if threads == 1 else {k: OrtModel(paths, k, n_blocks, n_classes, threads) for k in ort_1}
        for size in [int(b) for b in args.batch_sizes.split(",")]:
            group = batches(ids[: args.sentences], segs[: args.sentences], size)
            fns = functions(models, ort_models, group, rule, threads == 1 and size == 1, widths)
            med = time_functions(fns, args.reps)
            for name, seconds in med.items():
                rows.append({"function": name, "threads": threads, "batch": size,
                             "ms_per_sentence": 1000 * seconds / args.sentences})  # fmt: skip
            print(f"threads {threads}, batch {size}:",
                  {n: round(1000 * s / args.sentences, 3) for n, s in med.items()}, flush=True)  # fmt: skip
        limits.restore_original_limits()

    rss = measure_rss(models_dir, paths, work, texts, widths)
    report = build_report(args, info, sizes, metrics, majority, rows, rss)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(report) + "\n")
    print(render(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")


def measure_rss(models_dir: Path, paths: dict, work: Path, texts: list[str], widths: list[int]) -> dict[str, int]:
    dev_txt = work / "dev.txt"
    dev_txt.write_text("\n".join(texts) + "\n")
    out = {}
    for k in widths:
        out[f"packed-w1a{k}"] = peak_rss(beex("predict", str(work / f"w1a{k}.beex"), "--file", str(dev_txt),
                                              "--threads", "1", "--batch-size", "1"))  # fmt: skip
    for kind in ("f32", "int8"):
        out[f"ort-{kind}"] = peak_rss([sys.executable, __file__, "--rss-worker", str(paths[f"{kind}:full"]),
                                       str(models_dir / "float"), str(dev_txt)])  # fmt: skip
    out["pytorch-f32"] = peak_rss(beex("predict", str(models_dir / "float"), "--file", str(dev_txt),
                                       "--threads", "1", "--batch-size", "1"))  # fmt: skip
    print("peak RSS (bytes):", out, flush=True)
    return out


RATIO_KEYS = {"ort-int8": "ort_int8_over_packed", "ort-f32": "ort_f32_over_packed",
              "pytorch-f32": "pytorch_f32_over_packed", "pytorch-same": "same_function_over_packed"}  # fmt: skip


def row_key(function: str, threads: int, batch: int) -> str:
    return f"{function}@t{threads}b{batch}"


def _ratio(values: dict, numerator: str, denominator: str) -> float | None:
    """values[numerator] / values[denominator]; None when --widths left the packed model out."""
    return values[numerator] / values[denominator] if denominator in values else None


def build_report(args, info, sizes, metrics, majority, rows, rss) -> dict:
    by_key = {row_key(r["function"], r["threads"], r["batch"]): r for r in rows}
    for r in rows:
        ee = "+ee" if r["function"].endswith("+ee") else ""
        if r["function"].startswith("packed-"):
            width = r["function"].split("-")[1].removesuffix("+ee")
            for base, key in RATIO_KEYS.items():
                other = by_key.get(row_key(base.replace("same", width) + ee, r["threads"], r["batch"]))
                if other is not None:  # the same early-exit setting, threads and batch on both sides
                    r[key] = other["ms_per_sentence"] / r["ms_per_sentence"]
        r.update(metrics.get(r["function"], {}))

    def speedup(baseline: str, packed: str) -> float | None:
        """baseline's time / packed's time at batch 1, one thread; None when --widths left `packed` out."""
        rows_ = [by_key.get(row_key(name, 1, 1)) for name in (baseline, packed)]
        return None if None in rows_ else rows_[0]["ms_per_sentence"] / rows_[1]["ms_per_sentence"]

    measured = {
        "w1a1_ee_vs_ort_int8": ("packed W1A1 + early exit vs ORT int8 without exit", 4.0,
                                speedup("ort-int8", "packed-w1a1+ee")),
        "w1a1_ee_vs_ort_int8_ee": ("packed W1A1 + early exit vs ORT int8 + early exit", 4.0,
                                   speedup("ort-int8+ee", "packed-w1a1+ee")),
        "w1a4_ee_vs_ort_int8": ("packed W1A4 + early exit vs ORT int8 without exit", 1.5,
                                speedup("ort-int8", "packed-w1a4+ee")),
        "w1a4_ee_vs_ort_int8_ee": ("packed W1A4 + early exit vs ORT int8 + early exit", 1.5,
                                   speedup("ort-int8+ee", "packed-w1a4+ee")),
        "w1a32_vs_ort_f32": ("packed W1A32 vs ORT f32, both without exit", 1.0, speedup("ort-f32", "packed-w1a32")),
        "int8_onnx_over_packed_w1a1_bytes": ("int8 ONNX file / packed W1A1 file", 6.0,
                                             _ratio(sizes, "onnx-int8", "packed-w1a1")),
        "ort_int8_rss_over_beex_predict_w1a1": ("peak RSS, ORT int8 process / beex predict W1A1", 2.0,
                                                _ratio(rss, "ort-int8", "packed-w1a1")),
    }  # fmt: skip
    measured = {key: goal for key, goal in measured.items() if goal[2] is not None}
    goals = {key: {"what": what, "target": target, "measured": value, "met": value >= target}
             for key, (what, target, value) in measured.items()}  # fmt: skip
    return {
        "command": "python benchmarks/latency.py " + " ".join(sys.argv[1:]),
        "cpu": info,
        "sentences_timed": args.sentences,
        "reps": args.reps,
        "early_exit_rule": EE_NAME,
        "models": args.models_what,
        "dev_majority_accuracy": majority,
        "sizes_bytes": sizes,
        "peak_rss_bytes": rss,
        "rows": by_key,
        "goals": goals,
        "note": "shared 2-core machine: other sessions' editing and tests may have run during the timing",
    }


def render(report: dict) -> str:
    lines = [
        f"CPU: {report['cpu']['model']} ({report['cpu']['llvm_cpu']}); popcount: {report['cpu']['popcount_path']}; "
        f"W1A2/W1A4 linears on AMX tiles: {'yes' if report['cpu'].get('amx_tiles') else 'no'}",
        f"flags: {' '.join(report['cpu']['flags'])}",
        f"command: `{report['command']}`",
        f"early exit: {report['early_exit_rule']}; "
        f"dev majority-class accuracy {100 * report['dev_majority_accuracy']:.2f} %",
        "",
        "| function | threads | batch | ms / sentence | dev acc % | mean exit | ORT int8 / packed | ORT f32 / packed "
        "| PyTorch f32 / packed | same function in PyTorch / packed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"].values():

        def ratio(key, r=r):
            return f"{r[key]:.2f}x" if key in r else "-"

        exit_block = f"{r['mean_exit_block']:.2f}" if "mean_exit_block" in r else "-"
        acc = f"{100 * r['accuracy']:.2f}" if "accuracy" in r else "(= packed)"
        lines.append(
            f"| {r['function']} | {r['threads']} | {r['batch']} | {r['ms_per_sentence']:.3f} | {acc} | {exit_block} "
            f"| {ratio('ort_int8_over_packed')} | {ratio('ort_f32_over_packed')} | {ratio('pytorch_f32_over_packed')} "
            f"| {ratio('same_function_over_packed')} |"
        )
    lines += ["", "| size | bytes |", "|---|---|"]
    lines += [f"| {k} | {v:,} |" for k, v in report["sizes_bytes"].items()]
    lines += ["", "| peak RSS answering the dev set | bytes |", "|---|---|"]
    lines += [f"| {k} | {v:,} |" for k, v in report["peak_rss_bytes"].items()]
    lines += ["", "| goal (batch 1, one thread) | target | measured | met |", "|---|---|---|---|"]
    lines += [f"| {g['what']} | {g['target']}x | {g['measured']:.2f}x | {'yes' if g['met'] else 'no'} |"
              for g in report["goals"].values()]  # fmt: skip
    return "\n".join(lines)


def readme_rows(report: dict, artifact: str) -> str:
    """The README's rows for this benchmark (what | number | command | artifact), from a results file: every
    number in them is a value of the file, at the key the row cites (tests/docs/test_readme_numbers.py)."""
    rows, goals, sizes = report["rows"], report["goals"], report["sizes_bytes"]
    cpu = f"{report['cpu']['model'].split(' Processor')[0]} ({report['cpu']['llvm_cpu']})"
    cite = f"`{artifact}`"
    command = "`python benchmarks/minilm_models.py --out-dir M && python benchmarks/latency.py --models M`"

    def key(function: str, field: str) -> str:
        return f"`rows.{row_key(function, 1, 1)}.{field}`"

    def x(function: str, field: str) -> str:
        return f"{rows[row_key(function, 1, 1)][field]:.2f}x"

    def acc(function: str) -> str:
        return f"{100 * rows[row_key(function, 1, 1)]['accuracy']:.2f} %"

    lines = [
        f"| binarized MiniLM-L6 (untrained body, fitted exits) vs ONNX Runtime int8 of the float model, {cpu}, "
        "batch 1, one thread, both with early exit (goals: W1A1 4x, W1A4 1.5x); in brackets, against ORT int8 "
        "without exit | W1A1 "
        f"{x('packed-w1a1+ee', 'ort_int8_over_packed')} ({goals['w1a1_ee_vs_ort_int8']['measured']:.2f}x), W1A4 "
        f"{x('packed-w1a4+ee', 'ort_int8_over_packed')} ({goals['w1a4_ee_vs_ort_int8']['measured']:.2f}x); dev "
        f"accuracy {acc('packed-w1a1+ee')}, {acc('packed-w1a4+ee')}; ORT int8 {acc('ort-int8+ee')} | "
        f"{command} | {cite} {key('packed-w1a1+ee', 'ort_int8_over_packed')} "
        f"{key('packed-w1a4+ee', 'ort_int8_over_packed')} `goals.w1a1_ee_vs_ort_int8.measured` "
        f"`goals.w1a4_ee_vs_ort_int8.measured` {key('packed-w1a1+ee', 'accuracy')} "
        f"{key('packed-w1a4+ee', 'accuracy')} {key('ort-int8+ee', 'accuracy')} |",
        "| same, packed W1A32 vs ONNX Runtime float32, no exit (goal: no slower) | "
        f"{x('packed-w1a32', 'ort_f32_over_packed')} | same | {cite} {key('packed-w1a32', 'ort_f32_over_packed')} |",
        "| packed W1A1 file vs the int8 ONNX file (goal: 1/6) | "
        f"{sizes['packed-w1a1'] / 1e6:.2f} MB vs {sizes['onnx-int8'] / 1e6:.2f} MB: "
        f"{goals['int8_onnx_over_packed_w1a1_bytes']['measured']:.2f}x | same | {cite} `sizes_bytes.packed-w1a1` "
        "`sizes_bytes.onnx-int8` `goals.int8_onnx_over_packed_w1a1_bytes.measured` |",
        "| peak RSS answering SST-2 dev, ONNX Runtime int8 process / `beex predict` W1A1 (goal: 2x) | "
        f"{goals['ort_int8_rss_over_beex_predict_w1a1']['measured']:.2f}x | same | {cite} "
        "`goals.ort_int8_rss_over_beex_predict_w1a1.measured` |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
