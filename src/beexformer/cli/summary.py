"""`beex summary`: the 1-bit / 32-bit parameter table and the sizes, of a model or a packed file."""

from __future__ import annotations

import argparse
import json
import sys

from beexformer.cli.common import add_parser
from beexformer.errors import CheckpointError

EXAMPLE = """  beex summary runs/sst2
  beex summary runs/sst2 --full            # one line per layer
  beex summary sst2.beex                   # bytes on disk of the packed file vs float32
  beex summary --set d_model=128 --set n_blocks=4   # a configuration, before training"""


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "summary",
        help="1-bit vs 32-bit parameters and model size",
        description="Count 1-bit and 32-bit parameters per layer (like larq's model summary) and print the "
        "size ratio: bytes of the float32 checkpoint file over bytes of the packed file (`beex export`). "
        "Takes a run or model directory, a packed file, or no model at all (then the default configuration, "
        "changed with --set, which has no files: only its parameter accounting is printed).",
        example=EXAMPLE,
    )
    p.add_argument("model", nargs="?", help="run directory, model directory, or packed file")
    p.add_argument("--full", action="store_true", help="one line per layer instead of per block")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="config field (no model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from beexformer.engine import is_packed_model

    if args.model and is_packed_model(args.model):
        from beexformer.engine import packed_summary
        from beexformer.engine.summary import file_sizes

        info = packed_summary(args.model).to_dict()
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            print(file_sizes(args.model).describe())
            _print_packed(info)
        return 0
    from beexformer.accounting import bits_label, size_report
    from beexformer.cli.train import model_overrides
    from beexformer.config import BEExformerConfig
    from beexformer.model import BEExformer

    sizes = None
    if args.model:
        from beexformer.bundle import resolve_model_dir
        from beexformer.engine.export import measure_file_sizes

        directory = resolve_model_dir(args.model)
        model = BEExformer.from_pretrained(directory)
        try:
            sizes = measure_file_sizes(directory)
        except CheckpointError as err:  # the packed format cannot hold this model: no file, no size ratio
            print(f"size ratio not measured: {err}", file=sys.stderr)
    else:
        ns = argparse.Namespace(model_config=None, set=args.set, act_bits=None, float_twin=False)
        model = BEExformer(BEExformerConfig(**model_overrides(ns)))
    report = size_report(model)
    c = model.config
    bits = f"{bits_label(c)}, embeddings {c.embedding_bits}-bit, exits {c.exit_bits}-bit"
    if args.json:
        print(json.dumps({**report.to_dict(), "bits": bits, **(sizes.to_dict() if sizes else {})}, indent=2))
    else:
        print(report.format_table(group_depth=None if args.full else 2))
        print(f"bits: {bits}")
        if sizes:
            print(sizes.describe())
    return 0


def _print_packed(info: dict) -> None:
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k}: {v}")
        else:
            print(f"{key}: {value}")
