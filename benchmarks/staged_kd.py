"""A staged-distillation run on one GLUE task (float teacher, then W1A4 / W1A2 / W1A1 students, each taught by
the stage before), written as one JSON beside the task's trivial and TF-IDF baselines.

    python benchmarks/staged_kd.py --data-dir ../shared/data/glue --task mrpc --stages float,a4 \\
        --work-dir /tmp/runs/kd-mrpc --out benchmarks/results/staged_kd_mrpc.json -- --init minilm --epochs 2

Everything after `--` goes to `beex train` unchanged. Run it again with the same --work-dir to resume an
interrupted run (done stages are skipped). The dev metrics are those of each stage's best model, which is
picked on the held-out slice of train when the run has one (`--init`), else on dev (then optimistic).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from pathlib import Path

from beexformer.accounting import bits_label, size_report
from beexformer.cli.main import main as beex
from beexformer.data.glue import get_task, load_split
from beexformer.model import BEExformer
from beexformer.report.baselines import task_baselines
from beexformer.training.staged import PLAN_FILE, SUMMARY_FILE, StageResult


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="GLUE directory")
    p.add_argument("--task", required=True)
    p.add_argument("--stages", default="float,a4")
    p.add_argument("--work-dir", required=True, help="where the stage runs go (resumed when it exists)")
    p.add_argument("--out", required=True, help="JSON file of the results")
    p.add_argument("--no-tfidf", action="store_true", help="only the trivial baseline")
    cut = argv.index("--") if "--" in argv else len(argv)
    return p.parse_args(argv[:cut]), argv[cut + 1 :]


def run_stages(args: argparse.Namespace, train: list[str]) -> None:
    work = Path(args.work_dir)
    if (work / PLAN_FILE).is_file():
        code = beex(["train", "--resume", "--output", str(work), "--no-progress"])
    else:
        code = beex(["train", "--task", args.task, "--data-dir", args.data_dir, "--output", str(work),
                     "--stages", args.stages, "--no-progress", *train])  # fmt: skip
    if code != 0:
        sys.exit(code)


def stage_row(result: StageResult) -> dict:
    model = BEExformer.from_pretrained(Path(result.output) / "best")
    size = size_report(model)
    return {
        **dataclasses.asdict(result),
        "bits": bits_label(model.config),
        "packed_bytes": size.packed_bytes,
        "float32_bytes": size.float32_bytes,
    }


def main(argv: list[str]) -> None:
    args, train = parse_args(argv)
    run_stages(args, train)
    work = Path(args.work_dir)
    stages = [StageResult(**s) for s in json.loads((work / SUMMARY_FILE).read_text())]
    task = get_task(args.task)
    baselines = task_baselines(
        task, load_split(task, "train", args.data_dir), load_split(task, "dev", args.data_dir), not args.no_tfidf
    )
    rows = [stage_row(s) for s in stages]
    teacher = rows[0]["dev_metric_no_exit"]
    for row in rows:
        row["minus_first_stage_points"] = (
            None if row["dev_metric_no_exit"] is None else round(100 * (row["dev_metric_no_exit"] - teacher), 2)
        )
    result = {
        "command": "python benchmarks/staged_kd.py " + " ".join(argv),
        "task": task.name,
        "metric": task.main_metric,
        "stages": rows,
        "baselines": baselines.to_dict(),
        "training_cpu_minutes": round(sum(s.cpu_minutes for s in stages), 2),
        "training_wall_minutes": round(sum(s.minutes for s in stages), 2),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}; shared with other jobs",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("task", "training_cpu_minutes", "training_wall_minutes")}))


if __name__ == "__main__":
    main(sys.argv[1:])
