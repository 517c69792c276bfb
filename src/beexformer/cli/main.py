"""Entry point of `beex`: builds the parser from the subcommand modules and turns user errors into one line.

Subcommand modules must not import torch at module level: `beex eval`/`predict` on a packed model run on
numpy and numba only.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from beexformer.errors import BeexError

# Each module defines `register(subparsers) -> None` and sets `func=` on the parsers it adds.
COMMAND_MODULES = ["train", "evaluate", "predict", "sweep", "summary", "export", "llm", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beex",
        description="Binarized transformers with early exits: train, evaluate, export and run BEExformer "
        "models, and early exit for pretrained causal LMs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"beexformer.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BeexError as err:
        print(f"beex {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"beex {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
