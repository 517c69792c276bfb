"""Exit thresholds chosen on the held-out slice, two ways, and what each then costs on the dev set.

    python benchmarks/threshold_choice.py RUN [RUN ...] [--threads 1] [--write] \
        --out benchmarks/results/threshold_choice.json

- "point": the threshold that saves most FLOPs while the drop *measured on the slice* stays within the
  tolerance (the trainer's choice until this change);
- "bound": the same, with the 90th percentile of the drop over paired bootstrap resamples of the slice in its
  place (the trainer's choice now: `beexformer.training.holdout`).

`--write` stores the "bound" choice in the evaluated model's task.json, as a run trained today would have it
(the reproduction report then evaluates the run again: its record keys on the stored exit rule).
Both look only at the held-out slice the run's trainer set aside (the same split: the run's seed and holdout
fraction, rebuilt from its run.json); the dev set is only reported. Each RUN is a `beex train` output directory;
its model after the last step is used, as in the reproduction report. Not a test: every run evaluates up to
2,000 held-out and all dev sentences in PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from beexformer.data.glue import get_task
from beexformer.evaluation import ExitLogits, rule_result
from beexformer.exits import NeverExit
from beexformer.inference import load_predictor
from beexformer.jsonio import write_json
from beexformer.report.runner import final_model_dir
from beexformer.training.arguments import HOLDOUT_CAP, TrainingArguments
from beexformer.training.holdout import TOLERANCE, ThresholdChoice, choose_threshold, split_training_set
from beexformer.training.trainer import load_examples

CHOICES = {"point": None, "bound": 0.9}  # name -> confidence given to choose_threshold


@dataclass
class ChoiceRow:
    run: str
    task: str
    choice: str  # "point" or "bound"
    exit_rule: str  # the rule with the chosen threshold
    heldout_drop: float  # metric without exit - with it, on the held-out slice
    heldout_drop_bound: float  # what the choice compared with the tolerance
    heldout_flops_saved: float
    dev_no_exit: float
    dev_early_exit: float
    dev_drop: float
    dev_flops_saved: float


def run_rows(run: Path, write: bool) -> list[ChoiceRow]:
    """Both choices for one run: held-out and dev exit logits computed once, every rule on them."""
    args = TrainingArguments(**_training_fields(json.loads((run / "run.json").read_text())))
    task = get_task(args.task)
    model_dir = final_model_dir(run)
    predictor = load_predictor(model_dir)
    train = load_examples(task, "train", args)
    held = split_training_set(train, args.holdout, args.holdout_by, HOLDOUT_CAP, args.seed)[1]
    heldout = predictor.exit_logits([train[i] for i in held])
    dev = predictor.exit_logits(load_examples(task, "dev", args))
    rule_name = predictor.default_rule().name
    choices = {name: choose_threshold(task, predictor.config, heldout, rule_name, confidence=conf)
               for name, conf in CHOICES.items()}  # fmt: skip
    if write:
        _store_rule(model_dir, choices["bound"].rule)
    return [_row(run, task, predictor, name, choice, dev) for name, choice in choices.items()]


def _store_rule(model_dir: Path, rule) -> None:
    info = json.loads((model_dir / "task.json").read_text())
    info.update(exit_rule=rule.name, exit_threshold=getattr(rule, rule.threshold_name))
    write_json(model_dir / "task.json", info, indent=2)


def _row(run, task, predictor, name, choice: ThresholdChoice, dev: ExitLogits) -> ChoiceRow:
    dev_exit = rule_result(task, predictor.config, dev, choice.rule)
    dev_none = rule_result(task, predictor.config, dev, NeverExit())
    return ChoiceRow(
        run=run.name,
        task=task.name,
        choice=name,
        exit_rule=choice.rule.describe(),
        heldout_drop=choice.metric_no_exit - choice.metric_early_exit,
        heldout_drop_bound=choice.drop_bound,
        heldout_flops_saved=choice.flops_saved,
        dev_no_exit=dev_none.metric,
        dev_early_exit=dev_exit.metric,
        dev_drop=dev_none.metric - dev_exit.metric,
        dev_flops_saved=dev_exit.flops_saved,
    )


def _training_fields(saved: dict) -> dict:
    """run.json holds every TrainingArguments field plus the model overrides; keep what the class takes."""
    fields = TrainingArguments.__dataclass_fields__
    return {k: v for k, v in saved.items() if k in fields}


def markdown(rows: list[ChoiceRow]) -> str:
    head = (
        "| run | choice | rule | held-out drop | bound | held-out FLOPs saved | dev no exit | dev early exit "
        "| dev drop | dev FLOPs saved |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r.run} | {r.choice} | {r.exit_rule} | {100 * r.heldout_drop:.2f} | {100 * r.heldout_drop_bound:.2f} "
        f"| {100 * r.heldout_flops_saved:.1f} % | {100 * r.dev_no_exit:.2f} | {100 * r.dev_early_exit:.2f} "
        f"| {100 * r.dev_drop:.2f} | {100 * r.dev_flops_saved:.1f} % |\n"
        for r in rows
    )
    return head + body


def summary(rows: list[ChoiceRow]) -> str:
    lines = []
    for name in CHOICES:
        mine = [r for r in rows if r.choice == name]
        within = sum(r.dev_drop <= TOLERANCE for r in mine)
        lines.append(
            f"- {name}: dev drop within {100 * TOLERANCE:.1f} point on {within} of {len(mine)} runs; mean dev drop "
            f"{100 * np.mean([r.dev_drop for r in mine]):.2f} points, largest "
            f"{100 * max(r.dev_drop for r in mine):.2f}; mean dev FLOPs saved "
            f"{100 * np.mean([r.dev_flops_saved for r in mine]):.1f} %"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="beex train output directories")
    parser.add_argument("--out", type=Path, required=True, help="JSON; the markdown table goes beside it")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the bound choice in each run's task.json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    missing = [str(r) for r in args.runs if not (r / "run.json").is_file() or not (r / "best").is_dir()]
    if missing:
        print(f"error: not a finished beex train run (run.json and best/ expected): {missing[0]}", file=sys.stderr)
        return 2
    rows = []
    for run in args.runs:
        rows += run_rows(run, args.write)
        print(markdown(rows[-2:]), end="", flush=True)
    command = "python benchmarks/threshold_choice.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    md = f"`{command}`\n\n{markdown(rows)}\n{summary(rows)}"
    args.out.with_suffix(".md").write_text(md)
    print(summary(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
