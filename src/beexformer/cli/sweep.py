"""`beex sweep`: dev metric against FLOPs saved for every exit rule over a grid of thresholds."""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

from beexformer.cli.common import add_data_args, add_parser, load_eval_examples
from beexformer.evaluation import SweepRow

EXAMPLE = """  beex sweep runs/sst2 --data-dir ../shared/data/glue --out sweeps/sst2
  beex sweep runs/sst2 --rules fractional_entropy,patience --out sweeps/sst2"""


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "sweep",
        help="threshold sweep of every exit rule: CSV and a PNG plot",
        description="Run the dev set once through every exit, then apply each exit rule at each threshold "
        "of its grid (exits.SWEEP_GRIDS) and write OUT/sweep.csv and OUT/sweep.png: the dev metric "
        "against FLOPs saved, one curve per rule.",
        example=EXAMPLE,
    )
    p.add_argument("model", help="run directory, model directory, or packed model file")
    add_data_args(p)
    p.add_argument("--rules", help="comma-separated rules (default: all that fit the task)")
    p.add_argument("--out", default="sweep", help="output directory")
    p.set_defaults(func=run)


def plot_sweep(rows: list[SweepRow], metric_name: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    baseline = next(r for r in rows if r.rule == "none")
    for rule in dict.fromkeys(r.rule for r in rows if r.rule != "none"):
        pts = sorted((100 * r.flops_saved, 100 * r.metric) for r in rows if r.rule == rule)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=rule)
    ax.axhline(100 * baseline.metric, color="grey", ls="--", lw=1, label="no early exit")
    ax.set_xlabel("FLOPs saved by early exit (%)")
    ax.set_ylabel(f"dev {metric_name} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    from beexformer.errors import ConfigError
    from beexformer.evaluation import sweep_rows
    from beexformer.exits import CLASSIFICATION_RULES, SWEEP_GRIDS, check_rule_fits
    from beexformer.inference import load_predictor

    predictor = load_predictor(args.model)
    task, examples = load_eval_examples(args, predictor.info.task)
    if args.rules:
        rules = [r.strip() for r in args.rules.split(",") if r.strip()]
        unknown = [r for r in rules if r not in SWEEP_GRIDS]
        if unknown:
            raise ConfigError(f"unknown rule(s) {unknown}; choose from {', '.join(SWEEP_GRIDS)}")
        for rule in rules:
            try:
                check_rule_fits(rule, predictor.config.is_regression)
            except ValueError as err:
                raise ConfigError(str(err)) from None
    else:
        rules = ["regression_patience"] if predictor.config.is_regression else list(CLASSIFICATION_RULES)
    data = predictor.exit_logits(examples)
    if data.labels is None:
        raise ConfigError(f"split {args.split!r} has no labels: sweep needs a labelled split")
    rows = sweep_rows(task, predictor.config, data, rules)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[field.name for field in dataclasses.fields(SweepRow)])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in rows)
    plot_sweep(rows, task.main_metric, f"{task.name} {args.split}: early exit trade-off", out / "sweep.png")
    for r in rows:
        print(
            f"{r.rule:<20} {str(r.threshold):>7}  {task.main_metric} {100 * r.metric:6.2f}  "
            f"FLOPs saved {100 * r.flops_saved:5.1f} %  mean exit {r.mean_exit_block:.2f}"
        )
    print(f"wrote {out / 'sweep.csv'} and {out / 'sweep.png'}")
    return 0
