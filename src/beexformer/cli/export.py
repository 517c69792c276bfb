"""`beex export RUN_DIR --out MODEL`: write the packed 1-bit model the numpy/numba runtime runs."""

from __future__ import annotations

import argparse

from beexformer.cli.common import add_parser

EXAMPLE = """  beex export runs/sst2 --out sst2.beex        # RUN_DIR/best -> one packed file
  beex summary sst2.beex                        # bytes on disk vs the float32 checkpoint
  beex eval sst2.beex --data-dir ../shared/data/glue   # evaluated by the packed runtime (no torch)"""


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "export",
        help="pack a trained model into 1-bit words for the fast CPU runtime",
        description="Write a trained model as one safetensors file (no pickle): binarized weights as 1-bit "
        "words packed along the input dimension plus their per-row scales, everything else in float32, the "
        "tokenizer and the config. `beex eval`, `predict` and `summary` take the file in place of a run "
        "directory and run it with the packed runtime (numpy + numba, XNOR-popcount kernels).",
        example=EXAMPLE,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (its best/ model) or model directory")
    p.add_argument("--out", required=True, metavar="MODEL", help="packed model file to write, e.g. sst2.beex")
    p.add_argument("--check", action="store_true", help="reload the file and compare with PyTorch on random inputs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from beexformer.engine.export import export_run
    from beexformer.engine.summary import file_sizes

    path = export_run(args.run_dir, args.out)
    print(f"wrote {path}: {file_sizes(path).describe()}")
    if args.check:
        from beexformer.engine.export import check_export

        worst = check_export(args.run_dir, path)
        print(f"check: packed runtime vs PyTorch, max |logit difference| {worst:.2e} over every exit")
    return 0
