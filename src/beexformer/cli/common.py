"""Arguments and helpers shared by several subcommands. No torch import here."""

from __future__ import annotations

import argparse

from beexformer.errors import ConfigError


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in the epilog as written and shows each option's default once: appended as
    "(default: X)" when the option has a real default and its help does not already say it. An option whose
    default is None (decided later, e.g. by TrainingArguments) states its default in its help text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default is argparse.SUPPRESS
        if unset or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_parser(subparsers, name: str, help: str, description: str, example: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help, description=description, epilog=f"example:\n{example}", formatter_class=HelpFormatter
    )


def add_data_args(parser: argparse.ArgumentParser, with_task: bool = True) -> None:
    group = parser.add_argument_group("data")
    if with_task:
        group.add_argument("--task", help="GLUE task (default: the task the model was trained on)")
    group.add_argument(
        "--data-dir",
        help="directory in the layout of the GLUE download script (default: $GLUE_DIR)",
    )
    group.add_argument("--split", default="dev", help="split to evaluate: dev, dev_mismatched (MNLI), train")
    group.add_argument(
        "--source",
        choices=("files", "hf"),
        default="files",
        help="read --data-dir files or Hugging Face datasets",
    )


def add_exit_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("early exit")
    group.add_argument(
        "--exit-rule",
        choices=("fractional_entropy", "entropy", "patience", "max_prob", "regression_patience", "none"),
        help="exit rule (default: the one stored with the model, else fractional_entropy)",
    )
    group.add_argument(
        "--threshold",
        type=float,
        help="the rule's knob: delta (fractional_entropy), tau (entropy), patience, confidence (max_prob), "
        "tol (regression_patience)",
    )
    group.add_argument(
        "--returns",
        choices=("current", "previous"),
        default="current",
        help="answer with the exit block's prediction or the one before it",
    )


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for the model (numba kernels of a packed model split token rows and samples across "
        "them from 256 rows on, so a single sentence always runs on one; PyTorch and the BLAS otherwise)",
    )


def apply_threads(n: int) -> None:
    """Use `n` threads in every pool this process may run the model on. Called before the model is loaded: the
    BLAS and PyTorch size their pools from these variables when first imported (the CLI has imported neither
    yet); numba's pool (packed runtime) is capped directly."""
    import os
    import sys

    if n < 1:
        raise ConfigError(f"--threads {n}: must be at least 1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    if "torch" in sys.modules:  # imported earlier in this process (tests, or a caller of main())
        sys.modules["torch"].set_num_threads(n)


def exit_rule_from_args(args: argparse.Namespace, predictor):
    """The rule given on the command line, else the one stored with the model; refused (one line) when it
    cannot judge the model's head, e.g. an entropy rule on a regression task."""
    from beexformer.exits import build_exit_rule, check_rule_fits

    name = args.exit_rule or predictor.info.exit_rule
    try:
        check_rule_fits(name, predictor.config.is_regression)
        if args.exit_rule is None and args.threshold is None:
            rule = predictor.default_rule()
            rule.returns = args.returns
            return rule
        return build_exit_rule(name, args.threshold, returns=args.returns)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def load_eval_examples(args: argparse.Namespace, task_name: str):
    from beexformer.data.glue import get_task, load_split, load_split_hf

    name = args.task or task_name
    if not name:
        raise ConfigError("the model does not say which task it was trained on: pass --task")
    task = get_task(name)
    if args.source == "hf":
        return task, load_split_hf(task, args.split)
    return task, load_split(task, args.split, args.data_dir)
