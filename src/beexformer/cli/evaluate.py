"""`beex eval`: dev metric with and without early exit, exit histogram, mean exit block, FLOPs saved, size."""

from __future__ import annotations

import argparse
import time

from beexformer.accounting import FileSizes
from beexformer.cli.common import (
    add_data_args,
    add_exit_args,
    add_parser,
    add_threads_arg,
    apply_threads,
    exit_rule_from_args,
    load_eval_examples,
)
from beexformer.errors import CheckpointError
from beexformer.jsonio import write_json

EXAMPLE = """  beex eval runs/sst2 --data-dir ../shared/data/glue
  beex eval runs/sst2 --exit-rule patience --threshold 2 --json sst2.json
  beex eval sst2.beex --data-dir ../shared/data/glue      # the packed 1-bit model (no torch)"""


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "eval",
        help="evaluate a model on a GLUE dev set with and without early exit",
        description="Evaluate a trained model (run directory, model directory, or packed file from "
        "`beex export`) on a GLUE split: the task's metric with and without early exit, the metric at every "
        "exit, the exit-block histogram, mean exit block, FLOPs saved and model size.",
        example=EXAMPLE,
    )
    p.add_argument("model", help="run directory, model directory, or packed model file")
    add_data_args(p)
    add_exit_args(p)
    p.add_argument("--json", help="also write the report to this JSON file")
    add_threads_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from beexformer.evaluation import evaluation_report, format_report
    from beexformer.inference import load_predictor

    apply_threads(args.threads)
    predictor = load_predictor(args.model)
    task, examples = load_eval_examples(args, predictor.info.task)
    rule = exit_rule_from_args(args, predictor)
    started = time.perf_counter()
    data = predictor.exit_logits(examples)
    report = evaluation_report(task, predictor.config, data, rule)
    seconds = time.perf_counter() - started
    try:
        size: FileSizes | str = predictor.size()
    except CheckpointError as err:  # a model the packed format cannot hold has no size ratio
        size = str(err)
    print(format_report(report, size))
    if args.json:
        extra = {"model": str(args.model), "runtime": predictor.kind, "split": args.split, "seconds": seconds}
        size_json = {"not_measured": size} if isinstance(size, str) else size.to_dict()
        write_json(args.json, {**report.to_dict(), **extra, "size": size_json})
        print(f"report written to {args.json}")
    return 0
