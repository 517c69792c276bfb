"""`beex train`: train a BEExformer on a GLUE task."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from beexformer.cli.common import add_parser
from beexformer.errors import ConfigError
from beexformer.training.holdout import HOLDOUT_BY

EXAMPLE = """  beex train --task sst2 --data-dir ../shared/data/glue --output runs/sst2
  beex train --task sst2 --init minilm --output runs/sst2-minilm     # start from all-MiniLM-L6-v2, 1-bit
  beex train --task sst2 --init minilm --float-twin --output runs/sst2-float   # its float fine-tuning
  beex train --task rte --output runs/rte --act-bits 1 --set n_blocks=4 --set d_model=128
  beex train --task rte --output runs/rte-a4 --act-bits 4 --teacher runs/rte-float   # distillation
  beex train --task rte --output runs/rte-staged --stages float,a4,a2,a1   # BiT's multi-step schedule
  beex train --resume --output runs/sst2          # continue after Ctrl-C or a crash
  accelerate launch -m beexformer.cli.main train --task sst2 --output runs/sst2   # several GPUs"""


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "train",
        help="train a BEExformer on a GLUE task",
        description="Train a BEExformer on a GLUE task (soft-routing loss over all exits), from scratch or, "
        "with --init, from a pretrained BERT-family encoder whose linear layers are then binarized. "
        "Evaluates at every epoch end, keeps the best model in OUTPUT/best (picked on dev from scratch; with "
        "--init on a held-out slice of train, which also sets the exit threshold), writes atomic checkpoints "
        "to OUTPUT/checkpoints (Ctrl-C saves one before stopping) and resumes with --resume.",
        example=EXAMPLE,
    )
    p.add_argument("--task", help="GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli")
    p.add_argument("--output", help="run directory (default: runs/TASK)")
    p.add_argument("--data-dir", help="GLUE directory in the download script's layout (default: $GLUE_DIR)")
    p.add_argument("--source", choices=("files", "hf"), help="GLUE files or Hugging Face datasets (online)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument(
        "--init",
        metavar="DIR|minilm|HUB_NAME",
        help="start from a Hugging Face BERT checkpoint: a local directory (config.json, model.safetensors, "
        "vocab.txt), 'minilm' (all-MiniLM-L6-v2 from requirements-models.txt, offline) or a hub name (online)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=float, help="epochs to train (default: 1; 3 with --init), 10 for a "
                   "distilled --init run (--teacher)")  # fmt: skip
    g.add_argument("--step-cap", type=int, help="at most this many steps when training by epochs "
                   "(default: 0 = no cap; 2000 with --init)")  # fmt: skip
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (overrides --epochs)")
    g.add_argument("--batch-size", type=int, help="examples per step (default: 64; 32 with --init)")
    g.add_argument("--lr", type=float, help="peak learning rate of AdamW (default: 1e-3; 1e-4 with --init)")
    g.add_argument("--binary-lr", type=float, help="learning rate of the latent 1-bit weights (default: --lr)")
    g.add_argument("--binarize-ramp", type=float, help="share of the steps over which the 1-bit layers are "
                   "blended from their float weights into 1-bit (default: 0 = 1-bit from the first step; "
                   "0.3 with --init)")  # fmt: skip
    g.add_argument("--head-lr", type=float, help="learning rate of the exit heads (default: --lr; 1e-3 with --init)")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (default: 0.01; 0.01 with --init)")
    g.add_argument("--binary-weight-decay", type=float, help="of the latent 1-bit weights (default: --weight-decay)")
    g.add_argument("--holdout", type=float, help="share of train held out to pick the best model and the exit "
                   "threshold, at most 2000 examples (default: 0 = pick on dev; 0.1 with --init)")  # fmt: skip
    g.add_argument("--holdout-by", choices=HOLDOUT_BY, help="draw the held-out slice by example "
                   "(default) or by whole sentence, training on no text inside a held-out one (SST-2 holds "
                   "every phrase of each sentence)")  # fmt: skip
    g.add_argument("--warmup-ratio", type=float, help="share of steps of linear warm-up (default: 0.06)")
    g.add_argument("--seed", type=int, help="random seed (default: 42)")
    g.add_argument("--patience", type=int, help="stop after this many evaluations without improvement")
    g.add_argument("--eval-every", type=int, dest="eval_every_steps", help="also evaluate every N steps")
    g.add_argument("--save-every", type=int, dest="save_every_steps", help="checkpoint every N steps (default: 200)")
    g.add_argument("--keep-checkpoints", type=int, help="how many recent checkpoints to keep (default: 2)")
    g.add_argument("--max-train-samples", type=int, help="use only the first N training examples")
    g.add_argument("--threads", type=int, dest="num_threads", help="torch CPU threads (default: torch's)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    t = p.add_argument_group("tokenizer")
    t.add_argument("--tokenizer", help="Hugging Face tokenizer name or path (default: train a WordPiece)")
    t.add_argument("--vocab-size", type=int, help="size of the trained WordPiece vocabulary (default: 8000)")
    t.add_argument("--max-len", type=int, help="truncate inputs to this many tokens (default: 128)")
    m = p.add_argument_group("model (any BEExformerConfig field with --set)")
    m.add_argument(
        "--act-bits",
        type=int,
        choices=(1, 2, 4, 32),
        help="activation bits: 1 = W1A1, 2 / 4 = learned-step (LSQ), 32 = W1A32 (the paper's, default); "
        "--set act_binarizer=elastic for BiT's elastic 1-bit sign",
    )
    m.add_argument("--float-twin", action="store_true", help="no binarization at all (the float baseline)")
    m.add_argument("--model-config", help="JSON file of BEExformerConfig fields")
    m.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="e.g. --set n_blocks=4")
    k = p.add_argument_group("distillation (docs/training.md): a teacher run on the same task and tokenizer")
    k.add_argument("--teacher", metavar="RUN", help="run or model directory of the teacher, e.g. a --float-twin run")
    k.add_argument("--kd-task", type=float, help="weight of the loss on the labels (default: 0)")
    k.add_argument("--kd-logits", type=float, help="weight of the soft cross-entropy at every exit (default: 1)")
    k.add_argument("--kd-hidden", type=float, help="weight of the hidden-state squared error (default: 1)")
    k.add_argument("--kd-attention", type=float, help="weight of the attention KL (default: 1)")
    k.add_argument("--kd-temperature", type=float, help="softmax temperature of the logit term (default: 1)")
    k.add_argument(
        "--stages",
        help="staged schedule in OUTPUT/<stage>, e.g. float,a4,a2,a1: each stage starts from and is taught by "
        "the previous one; --resume --output OUTPUT continues it",
    )
    k.add_argument(
        "--start-from",
        metavar="RUN",
        help="start from this finished run's best weights (the model is built from --init or from scratch with "
        "this run's bits, then takes them; fresh activation quantizers, no binarization ramp): e.g. --act-bits 4 "
        "--start-from a W1A32 run --teacher the float run. With --stages the first stage starts from it (and is "
        "taught by it unless --teacher is given)",
    )
    e = p.add_argument_group("early exit used for model selection and stored with the model")
    e.add_argument(
        "--exit-rule",
        help="fractional_entropy, entropy, patience, max_prob; regression_patience for STS-B "
        "(default: fractional_entropy, or regression_patience on a regression task)",
    )
    e.add_argument(
        "--exit-threshold", type=float, help="the rule's threshold (default: the rule's own, e.g. delta = 0.05)"
    )
    p.set_defaults(func=run)


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def model_overrides(args: argparse.Namespace) -> dict:
    from beexformer.config import BEExformerConfig

    fields = {f.name for f in dataclasses.fields(BEExformerConfig)}
    overrides: dict = {}
    if args.model_config:
        try:
            with open(args.model_config) as f:
                overrides.update(json.load(f))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{args.model_config}: cannot read model config ({err})") from None
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
        overrides[key] = _parse_value(value)
    if args.act_bits:
        overrides["act_bits"] = args.act_bits
    if args.float_twin:
        overrides.update(weight_bits=32, act_bits=32, embedding_bits=32, exit_bits=32)
    for key in ("vocab_size", "max_len", "n_classes"):
        if key in overrides:
            raise ConfigError(f"{key} is set from the data and tokenizer; use --vocab-size / --max-len instead")
    return overrides


def run(args: argparse.Namespace) -> int:
    from beexformer.training.arguments import TrainingArguments
    from beexformer.training.staged import PLAN_FILE, StagedRun, parse_stages
    from beexformer.training.trainer import RESUMABLE_OVERRIDES as RESUMABLE
    from beexformer.training.trainer import train

    if not args.resume and not args.task:
        raise ConfigError("--task is required (or --resume --output RUN_DIR)")
    if args.resume and not args.output:
        raise ConfigError("--resume needs --output RUN_DIR")
    # every TrainingArguments field that has a flag of the same name and was given
    fields = [f.name for f in dataclasses.fields(TrainingArguments) if f.name not in ("model", "progress")]
    values = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    if args.resume:
        from beexformer.training.trainer import RUN_ARGS, resume_arguments

        if (Path(args.output) / PLAN_FILE).is_file():
            StagedRun.load(args.output, {**values, "progress": not args.no_progress}).run()
            return 0
        if not (Path(args.output) / RUN_ARGS).is_file():
            raise ConfigError(f"{args.output}: no {RUN_ARGS}, so no run to resume (train without --resume)")
        values["progress"] = not args.no_progress
        ignored = sorted(set(values) - set(RESUMABLE) - {"output"})
        if ignored:
            print(f"resuming: ignoring {', '.join(ignored)} (a resumed run keeps its settings)", file=sys.stderr)
        summary = train(resume_arguments(args.output, values), resume=True)
        return _report(summary)
    values.setdefault("output", f"runs/{args.task.lower()}")
    values["progress"] = not args.no_progress
    values["model"] = model_overrides(args)
    if args.stages:  # the schedule's first stage starts from --start-from, the later ones from their predecessor
        start = values.pop("start_from", None)
        StagedRun.create(TrainingArguments(**values), parse_stages(args.stages), start=start).run()
        return 0
    return _report(train(TrainingArguments(**values)))


def _report(summary: dict) -> int:
    best = summary["best_metric"]
    print(
        f"done: {summary['steps']} steps in {summary['elapsed_seconds'] / 60:.1f} min; best {summary['selected_on']} "
        f"{summary['history'][-1]['metric'] if summary['history'] else 'metric'} with early exit "
        f"{'-' if best is None else f'{100 * best:.2f}'} at step {summary['best_step']}; "
        f"model in {summary['output']}/best"
    )
    return 0
