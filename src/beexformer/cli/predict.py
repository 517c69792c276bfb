"""`beex predict`: label texts with early exit, one JSON line per input."""

from __future__ import annotations

import argparse
import json
import sys

from beexformer.cli.common import add_exit_args, add_parser, add_threads_arg, apply_threads, exit_rule_from_args
from beexformer.errors import DataError

EXAMPLE = """  beex predict runs/sst2 "a gorgeous, witty film" "a dull mess"
  beex predict sst2.beex --file reviews.txt > labels.jsonl
  beex predict runs/rte --file pairs.tsv            # sentence pairs: one "a<TAB>b" per line"""


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "predict",
        help="label texts, one JSON line per input",
        description="Run a trained model (directory or packed file) on texts given as arguments or in a "
        "file (one per line; for sentence-pair tasks 'first<TAB>second'). Prints one JSON line per input, in "
        "input order, with the label, its score (probability, or the predicted value for regression) and the "
        "block the input left at: output line N answers input line N. Every line is an input, a blank one "
        'too (it is the empty text and gets a result like any other), and so is an empty argument "".',
        example=EXAMPLE,
    )
    p.add_argument("model", help="run directory, model directory, or packed model file")
    p.add_argument("texts", nargs="*", help="texts to label (or use --file)")
    p.add_argument("--file", help="file with one input per line, blank lines included ('-' for standard input)")
    p.add_argument("--batch-size", type=int, default=64, help="inputs per batch")
    add_threads_arg(p)
    add_exit_args(p)
    p.set_defaults(func=run)


def _read_lines(path: str) -> list[str]:
    try:
        if path == "-":
            return [line.rstrip("\n") for line in sys.stdin]
        with open(path, encoding="utf-8") as f:  # universal newlines: \r\n and \r end a line too
            return [line.rstrip("\n") for line in f]
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from beexformer.exits import log_softmax
    from beexformer.inference import load_predictor

    if not args.texts and not args.file:
        raise DataError("no input: give texts as arguments or --file FILE")
    # Every line is an input, blank ones too, so that output line N always answers input line N.
    lines = list(args.texts) + (_read_lines(args.file) if args.file else [])
    apply_threads(args.threads)
    predictor = load_predictor(args.model)
    if not lines:
        return 0  # an empty file: no input lines, no output lines
    split = [line.split("\t", 1) for line in lines]
    texts_a = [parts[0] for parts in split]
    texts_b = [parts[1] if len(parts) > 1 else None for parts in split]
    rule = exit_rule_from_args(args, predictor)
    ids, segs = predictor.encode(texts_a, texts_b if any(b is not None for b in texts_b) else None)
    out = predictor.run(ids, segs, rule, batch_size=args.batch_size)
    labels = predictor.info.label_list
    regression = predictor.config.n_classes == 1
    probs = None if regression else np.exp(log_softmax(out.logits))
    for i, line in enumerate(lines):
        record: dict = {"input": line, "exit_block": int(out.exit_block[i])}
        if regression:
            record["score"] = float(out.predictions[i])
        else:
            k = int(out.predictions[i])
            record["label"] = labels[k] if k < len(labels) else k
            record["score"] = round(float(probs[i, k]), 6)
        print(json.dumps(record, ensure_ascii=False))
    return 0
