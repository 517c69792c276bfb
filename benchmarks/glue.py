"""Train the default BEExformer configuration on six GLUE tasks and record what a user would ask first.

    python benchmarks/glue.py --data-dir ../shared/data/glue [--tasks sst2,cola,...] [--act-bits 1]

Per task: dev metric with and without early exit, the exit histogram, mean exit block, FLOPs saved, size
ratio (bytes of the float32 checkpoint file over bytes of the packed file `beex export` writes), training
minutes. Results are appended to
benchmarks/results/glue[-w1a1].json as each task finishes, so an interrupted run keeps what it measured
(rerun to continue: finished tasks are skipped). Not a test: it takes tens of minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

TASKS = ["sst2", "cola", "mrpc", "rte", "stsb", "wnli"]


def run_task(task: str, args: argparse.Namespace, work: Path) -> dict:
    from beexformer.inference import TorchPredictor
    from beexformer.training.arguments import TrainingArguments
    from beexformer.training.trainer import train

    out = work / task
    model = {"act_bits": args.act_bits}
    started = time.perf_counter()
    resume = (out / "checkpoints").is_dir()
    summary = train(
        TrainingArguments(
            task=task,
            output=str(out),
            data_dir=args.data_dir,
            epochs=args.epochs,
            seed=args.seed,
            num_threads=args.threads,
            progress=False,
            model=model,
        ),
        resume=resume,
        log=lambda m: print(f"  [{task}] {m}", flush=True),
    )
    minutes = (time.perf_counter() - started) / 60
    # The trainer evaluated the kept model on the dev set with its exit rule when it saved it.
    report = json.loads((out / "best" / "metrics.json").read_text())
    predictor = TorchPredictor(out)
    size = predictor.size()  # exports the model to a temporary packed file and measures both files
    return {
        "task": task,
        "metric": report["metric"],
        "metric_early_exit": report.get("metric_early_exit"),
        "metric_no_exit": report.get("metric_no_exit"),
        "metrics_early_exit": report.get("metrics_early_exit"),
        "metrics_no_exit": report.get("metrics_no_exit"),
        "metric_per_exit": report.get("metric_per_exit"),
        "exit_rule": report["exit_rule"],
        "exit_histogram": report["exit_histogram"],
        "mean_exit_block": report["mean_exit_block"],
        "flops_saved": report["flops_saved"],
        "agreement_with_last_exit": report["agreement_with_last_exit"],
        "size_ratio": size.size_ratio,
        "packed_file_bytes": size.packed_file_bytes,
        "float32_checkpoint_bytes": size.float32_checkpoint_bytes,
        "train_minutes": minutes,
        "train_minutes_total": summary["elapsed_seconds"] / 60,
        "train_cpu_minutes": summary["cpu_seconds"] / 60,
        "steps": summary["steps"],
        "best_step": summary["best_step"],
        "seed": args.seed,
        "epochs": args.epochs,
        "config": predictor.config.to_dict(),
    }


def markdown(results: dict) -> str:
    rows = [
        "| task | metric | exit rule | with early exit | without | mean exit block | FLOPs saved | size ratio "
        "| train min (wall) | train min (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["tasks"].values():
        # Rows measured before the size ratio was of real files recorded only the parameter accounting.
        size = f"{r['size_ratio']:.2f}x" if "size_ratio" in r else "not measured"
        rows.append(
            f"| {r['task']} | {r['metric']} | {r['exit_rule']} | {100 * r['metric_early_exit']:.2f} "
            f"| {100 * r['metric_no_exit']:.2f} | {r['mean_exit_block']:.2f} | {100 * r['flops_saved']:.1f} % | {size} "
            f"| {r['train_minutes_total']:.1f} | {r.get('train_cpu_minutes', float('nan')):.1f} |"
        )
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="GLUE directory (e.g. ../shared/data/glue)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--act-bits", type=int, default=32, choices=(1, 32))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--work-dir", default="runs/glue-benchmark", help="where the runs are kept")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/glue[-w1a1].json)")
    args = parser.parse_args()
    suffix = "" if args.act_bits == 32 else "-w1a1"
    out = Path(args.out or f"benchmarks/results/glue{suffix}.json")
    work = Path(args.work_dir + suffix)
    results = json.loads(out.read_text()) if out.is_file() else {"tasks": {}}
    results["machine"] = {"python": sys.version.split()[0], "platform": platform.platform()}
    results["command"] = " ".join(sys.argv)
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        if task in results["tasks"]:
            print(f"{task}: already measured, skipped")
            continue
        print(f"{task}: training", flush=True)
        results["tasks"][task] = run_task(task, args, work)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(results))
        r = results["tasks"][task]
        print(
            f"{task}: {r['metric']} {100 * r['metric_early_exit']:.2f} with early exit, "
            f"{100 * r['metric_no_exit']:.2f} without; FLOPs saved {100 * r['flops_saved']:.1f} %; "
            f"{r['train_minutes_total']:.1f} min",
            flush=True,
        )
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
