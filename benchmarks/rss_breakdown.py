"""Where the resident memory of a packed-model process goes: RSS after each stage of what `beex predict` does.

    python benchmarks/rss_breakdown.py MODEL.beex [--sentences 872] [--out benchmarks/results/rss_breakdown.json]

One fresh interpreter, stages in the order `beex predict` meets them: the interpreter, numpy, llvmlite,
numba, the CLI module, the engine's modules (kernels defined, nothing compiled), the model file read and
prepared, the first numba call of the process (numba builds its CPU target and typing context: a one-element
`add`), the first sentence (the model's compiled blocks loaded from the on-disk cache), then the SST-2 dev
sentences one at a time with early exit. Each row: VmRSS after the stage and its increase (MB, 2^20 bytes);
VmHWM at the end. Run it twice if the engine's cache is cold (the first run compiles, and compiling costs
far more memory than loading the cache; the benchmark's `beex predict` rows are measured warm).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _status(field: str) -> float:
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--sentences", type=int, default=872)
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", str(HERE.parent.parent / "shared/data/glue")))
    p.add_argument("--out", default=str(HERE / "results" / "rss_breakdown.json"))
    args = p.parse_args()
    stages: list[tuple[str, float]] = [("python interpreter", _status("VmRSS"))]

    def mark(name: str) -> None:
        stages.append((name, _status("VmRSS")))

    import numpy as np

    mark("numpy")
    import llvmlite.binding  # noqa: F401

    mark("llvmlite (LLVM shared library)")
    import numba  # noqa: F401

    mark("numba (imports scipy for its BLAS check)")
    import beexformer.cli.main  # noqa: F401

    mark("beex CLI module (tokenizers)")
    from beexformer.engine import kernels
    from beexformer.engine.runtime import PackedModel
    from beexformer.exits import FractionalEntropy

    mark("engine modules (kernels defined, none compiled)")
    model = PackedModel.load(args.model)
    mark("model file read and prepared")
    tiny = np.zeros((1, 1), dtype=np.float32)
    kernels.SERIAL.add(tiny, tiny)
    mark("first numba call (CPU target and typing context)")
    from beexformer.data.glue import get_task, load_split

    texts = [e.text_a for e in load_split(get_task("sst2"), "dev", args.data_dir)[: args.sentences]]
    ids, segs = model.encode(texts)
    rule = FractionalEntropy(0.05)
    model.run([ids[0]], [segs[0]], rule)
    mark("first sentence (compiled blocks loaded from the cache)")
    for i in range(len(ids)):
        model.run([ids[i]], [segs[i]], rule)
    mark(f"{len(ids)} SST-2 dev sentences, early exit")
    rows = [{"stage": name, "rss_mb": round(rss, 1), "increase_mb": round(rss - (stages[i - 1][1] if i else 0), 1)}
            for i, (name, rss) in enumerate(stages)]  # fmt: skip
    report = {
        "command": "python benchmarks/rss_breakdown.py " + " ".join(sys.argv[1:]),
        "model": Path(args.model).name,
        "stages": rows,
        "peak_rss_mb": round(_status("VmHWM"), 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"command: `{report['command']}`", "", "| stage | RSS MB | increase MB |", "|---|---|---|"]
    lines += [f"| {r['stage']} | {r['rss_mb']:.1f} | {r['increase_mb']:+.1f} |" for r in rows]
    lines += ["", f"peak RSS (VmHWM): {report['peak_rss_mb']:.1f} MB"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
