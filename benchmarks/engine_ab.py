"""Before/after timing of the packed runtime: two source trees, the same packed files, alternated.

    git worktree add --detach /tmp/beex-old OLD_COMMIT
    python benchmarks/engine_ab.py --base-src /tmp/beex-old/src --models w1a1.beex w1a4.beex w1a32.beex

Each round runs one worker process per side, in turn (base, new, base, new, ...), so slow drifts of a shared
machine hit both sides alike. A worker imports `beexformer` from its side's source tree (PYTHONPATH), pins
one thread (numba and the BLAS), loads every model, tokenizes the first --sentences SST-2 dev sentences with
the model's own tokenizer (the same ids on both sides), compiles and warms up, then times `PackedModel.run`
from token ids to the answer: batch 1 (one sentence per call) and one sorted batch of all of them, without
and with early exit (fractional entropy, delta 0.05, as benchmarks/latency.py). A worker reports the median
of --reps repetitions; the table shows, per side, the median over --rounds workers, and base / new.
Both sides run the same function on the same inputs; only the engine's code differs.
Writes --out (JSON) and the same name with .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DELTA = 0.05


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-src", required=True, help="the `src` folder of the code to compare against")
    p.add_argument("--new-src", default=str(HERE.parent / "src"), help="default: this checkout's src")
    p.add_argument("--models", nargs="+", required=True, help="packed model files")
    p.add_argument("--sentences", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="worker processes per side, alternated")
    p.add_argument("--reps", type=int, default=3, help="repetitions inside a worker (median)")
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", str(HERE.parent.parent / "shared/data/glue")))
    p.add_argument("--note", default="", help="a line about the machine's state, printed with the table")
    p.add_argument("--out", default=str(HERE / "results" / "engine_ab.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def sst2_dev(data_dir: str, n: int) -> list[str]:
    """The first n SST-2 dev sentences, read by the project's GLUE loader (present on both sides' trees)."""
    from beexformer.data.glue import get_task, load_split

    return [example.text_a for example in load_split(get_task("sst2"), "dev", data_dir)[:n]]


def worker(args: argparse.Namespace) -> None:
    """Time every model with the `beexformer` on PYTHONPATH; print one JSON line."""
    import numba
    import numpy as np
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)
    threadpool_limits(1)
    from beexformer.engine.runtime import PackedModel
    from beexformer.exits import FractionalEntropy

    texts = sst2_dev(args.data_dir, args.sentences)
    result = {}
    for path in args.models:
        model = PackedModel.load(path)
        ids, segs = model.encode(texts)
        order = np.argsort([len(s) for s in ids], kind="stable")
        batch = ([ids[i] for i in order], [segs[i] for i in order])
        for rule_name, rule in (("no exit", None), ("exit", FractionalEntropy(DELTA))):
            model.run(*batch, rule)  # compile (or load the cache) and warm up
            for i in range(len(ids)):
                model.run([ids[i]], [segs[i]], rule)
            one, whole = [], []
            for _ in range(args.reps):
                start = time.perf_counter()
                for i in range(len(ids)):
                    model.run([ids[i]], [segs[i]], rule)
                one.append((time.perf_counter() - start) / len(ids) * 1e3)
                start = time.perf_counter()
                model.run(*batch, rule)
                whole.append((time.perf_counter() - start) / len(ids) * 1e3)
            name = Path(path).name
            result[f"{name}|1|{rule_name}"] = float(np.median(one))
            result[f"{name}|{len(ids)}|{rule_name}"] = float(np.median(whole))
    print(json.dumps(result))


def run_worker(src: str, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", "--base-src", src, "--models", *args.models,
           "--sentences", str(args.sentences), "--reps", str(args.reps), "--data-dir", args.data_dir]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker for {src} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def revision(src: str) -> str:
    out = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def render(report: dict) -> str:
    lines = [
        f"command: `{report['command']}`",
        f"CPU: {report['cpu']}; one thread; {report['sentences']} SST-2 dev sentences; median of "
        f"{report['rounds']} alternated worker processes per side, each the median of {report['reps']} repetitions",
        f"base: {report['base_src']} ({report['base_revision']}); new: {report['new_src']} ({report['new_revision']})",
    ]
    if report["note"]:
        lines.append(report["note"])
    lines += ["", "| model | batch | early exit | base ms / sentence | new ms / sentence | base / new |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for row in report["rows"]:
        lines.append(
            f"| {row['model']} | {row['batch']} | {row['exit']} | {row['base_ms']:.3f} | {row['new_ms']:.3f} "
            f"| {row['base_ms'] / row['new_ms']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    import numpy as np

    from beexformer.engine.cpu import model_name
    from beexformer.errors import BeexError

    try:  # bad --data-dir: one line here, before any worker starts
        sst2_dev(args.data_dir, args.sentences)
    except BeexError as err:
        raise SystemExit(str(err)) from None

    sides: dict[str, list[dict[str, float]]] = {"base": [], "new": []}
    for r in range(args.rounds):
        for side, src in (("base", args.base_src), ("new", args.new_src)):
            sides[side].append(run_worker(src, args))
            print(f"round {r + 1}/{args.rounds} {side}: done", flush=True)
    rows = []
    for key in sides["new"][0]:
        model, batch, rule = key.split("|")
        base = float(np.median([w[key] for w in sides["base"]]))
        new = float(np.median([w[key] for w in sides["new"]]))
        rows.append({"model": model, "batch": int(batch), "exit": rule, "base_ms": base, "new_ms": new})
    report = {
        "command": shlex.join(["python", "benchmarks/engine_ab.py", *sys.argv[1:]]),
        "cpu": model_name(),
        "sentences": args.sentences, "rounds": args.rounds, "reps": args.reps, "note": args.note,
        "base_src": args.base_src, "new_src": args.new_src,
        "base_revision": revision(args.base_src), "new_revision": revision(args.new_src),
        "rows": rows, "workers": sides,
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
