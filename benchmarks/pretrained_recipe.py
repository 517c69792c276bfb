"""Training recipes for 1-bit weights started from all-MiniLM-L6-v2 (`--init minilm`), compared on any task.

    python benchmarks/pretrained_recipe.py --data-dir ../shared/data/glue --task stsb --recipe kd \\
        --teacher RUNS/stsb-float [--epochs 3 | --steps 300] [--seed 1] [--threads 1]
    python benchmarks/pretrained_recipe.py --data-dir ../shared/data/glue --task sst2 --recipe kd-a4-from-w1a32 \
        --teacher RUNS/sst2-float --start-from RUNS/sst2-w1a32-kd      # weights first, then 4-bit activations
    python benchmarks/pretrained_recipe.py --record RUN_DIR --recipe kd   # a run made with `beex train`
    python benchmarks/pretrained_recipe.py --list
    python benchmarks/pretrained_recipe.py --table

Each recipe is a set of TrainingArguments / BEExformerConfig changes on top of the `--init` defaults (W1A32:
1-bit encoder linears and token embeddings, float activations). Recipes are compared on the held-out slice of
the training set the trainer sets aside, never on the dev set: the dev metric is recorded beside it for the
notes in docs/training.md only. One JSON per run under benchmarks/results/pretrained_recipe/ with the run's
own arguments, every evaluation (held-out and dev), CPU and wall minutes and the command.
Not a test: each run takes minutes on two cores; run it under the heavy-compute lock.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

FLOAT = {"weight_bits": 32, "act_bits": 32, "embedding_bits": 32, "exit_bits": 32}


@dataclass(frozen=True)
class Recipe:
    training: dict  # TrainingArguments changes
    model: dict  # BEExformerConfig changes
    what: str
    needs_teacher: bool = False
    # The run starts from another finished run's weights (--start-from RUN: training/warm_start.py).
    start_from: bool = False


# The recipes measured before the binarization ramp became an --init default binarize from step 0 (STEP0), so
# that each name keeps meaning what its recorded results measured.
STEP0 = {"binarize_ramp": 0.0}
LOGITS_ONLY = {"kd_hidden": 0.0, "kd_attention": 0.0}  # no hidden-state or attention matching
BY_SENTENCE = {"holdout_by": "sentence"}  # the held-out slice as whole sentences (SST-2's phrases: holdout.py)
RECIPES: dict[str, Recipe] = {
    "float": Recipe({}, FLOAT, "float MiniLM fine-tuned: the ceiling"),
    "no-teacher": Recipe(STEP0, {}, "1-bit weights and token embeddings from step 0, labels only"),
    "binary-lr-1e-3": Recipe({**STEP0, "binary_lr": 1e-3}, {}, "as no-teacher, latent 1-bit weights at lr 1e-3"),
    "ramp": Recipe({"binarize_ramp": 0.3}, {}, "as no-teacher, blended from float into 1-bit over 30 % of steps"),
    "float-emb": Recipe(STEP0, {"embedding_bits": 32}, "as no-teacher, float token embeddings"),
    "ramp-float-emb": Recipe({"binarize_ramp": 0.3}, {"embedding_bits": 32}, "as ramp, float token embeddings"),
    "kd": Recipe(STEP0, {}, "distilled from the float run: logits, hidden states, attention", True),
    "kd-float-emb": Recipe(STEP0, {"embedding_bits": 32}, "as kd, float token embeddings", True),
    "kd-ramp": Recipe({"binarize_ramp": 0.3}, {}, "as kd, blended from float into 1-bit over 30 % of steps", True),
    "kd-ramp-int8-emb": Recipe(
        {"binarize_ramp": 0.3}, {"embedding_bits": 8}, "as kd-ramp, int8 token embeddings", True
    ),
    "kd-ramp-a4": Recipe(
        {"binarize_ramp": 0.3}, {"act_bits": 4}, "as kd-ramp, 4-bit activations (the report's W1A4 + KD)", True
    ),
    "kd-ramp-a4-int8-emb": Recipe(
        {"binarize_ramp": 0.3},
        {"act_bits": 4, "embedding_bits": 8},
        "as kd-ramp-a4, int8 token embeddings (the table W1A32 + KD uses)",
        True,
    ),
    "kd-a4-from-w1a32": Recipe(
        {},
        {"act_bits": 4, "embedding_bits": 8},
        "4-bit activations on a finished W1A32 + KD run (int8 table), taught by the float run: weights first",
        True,
        start_from=True,
    ),
    "kd-a1-from-a4": Recipe(
        {},
        {"act_bits": 1, "embedding_bits": 8},
        "1-bit mean-sign activations on a finished kd-a4-from-w1a32 run, taught by the float run",
        True,
        start_from=True,
    ),
    "kd-ramp-a4-o8": Recipe(
        {"binarize_ramp": 0.3},
        {"act_bits": 4, "act_outliers": 8},
        "as kd-ramp-a4, each linear's 8 largest input channels kept in float",
        True,
    ),
    "kd-ramp-a4-gelu-floor": Recipe(
        {"binarize_ramp": 0.3},
        {"act_bits": 4, "act_gelu_floor": True},
        "as kd-ramp-a4, the FFN down-projection's input levels from GELU's minimum (-0.17) instead of 0",
        True,
    ),
    "kd-ramp-a2-gelu-floor": Recipe(
        {"binarize_ramp": 0.3},
        {"act_bits": 2, "act_gelu_floor": True},
        "as kd-ramp-a4-gelu-floor at 2 bits (the report's W1A2 + KD with the floor)",
        True,
    ),
    "kd-ramp-a1": Recipe(
        {"binarize_ramp": 0.3},
        {"act_bits": 1},
        "as kd-ramp, 1-bit mean-sign activations (the report's W1A1 + KD)",
        True,
    ),
    "kd-ramp-a1-int8-emb": Recipe(
        {"binarize_ramp": 0.3},
        {"act_bits": 1, "embedding_bits": 8},
        "as kd-ramp-a1, int8 token embeddings (the table W1A32 + KD uses)",
        True,
    ),
    "kd-ramp-a1-elastic": Recipe(
        {"binarize_ramp": 0.3},
        {"act_bits": 1, "act_binarizer": "elastic"},
        "as kd-ramp-a1, BiT's elastic sign: a learned step and threshold per linear input",
        True,
    ),
    "kd-ramp-a1-logits": Recipe(
        {"binarize_ramp": 0.3, **LOGITS_ONLY},
        {"act_bits": 1},
        "as kd-ramp-a1, distilled from the teacher's logits alone",
        True,
    ),
    "float-by-sentence": Recipe(BY_SENTENCE, FLOAT, "as float, the held-out slice drawn by whole sentence"),
    "kd-ramp-a1-by-sentence": Recipe(
        {"binarize_ramp": 0.3, **BY_SENTENCE},
        {"act_bits": 1},
        "as kd-ramp-a1, the held-out slice drawn by whole sentence, taught by float-by-sentence",
        True,
    ),
    "kd-ramp-a4-by-sentence": Recipe(
        {"binarize_ramp": 0.3, **BY_SENTENCE},
        {"act_bits": 4},
        "as kd-ramp-a4, the held-out slice drawn by whole sentence, taught by float-by-sentence",
        True,
    ),
    "kd-logits": Recipe({**STEP0, **LOGITS_ONLY}, {}, "distilled from the float run, logits only", True),
}


@dataclass
class RecipeResult:
    recipe: str
    what: str
    task: str
    steps: int
    seed: int
    training_arguments: dict
    # The model after the last step on the held-out slice of train: what recipes are compared on.
    heldout_no_exit: float
    heldout_early_exit: float
    exit_rule: str
    # Dev, for the notes only: no choice is made on it.
    dev_no_exit: float
    dev_early_exit: float
    dev_flops_saved: float
    train_cpu_minutes: float
    train_wall_minutes: float
    history: list  # every evaluation of the run (log.jsonl)
    command: str
    machine: str


def record(run_dir: Path, recipe: str, command: str) -> RecipeResult:
    """The result of a finished run directory (its run.json and log.jsonl)."""
    args = json.loads((run_dir / "run.json").read_text())
    history = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    if not history:
        raise SystemExit(f"{run_dir}: no evaluation in log.jsonl yet")
    last = history[-1]
    return RecipeResult(
        recipe=recipe,
        what=RECIPES[recipe].what,
        task=args["task"],
        steps=last["step"],
        seed=args["seed"],
        training_arguments=args,
        heldout_no_exit=last["heldout_metric_no_exit"],
        heldout_early_exit=last["heldout_metric_early_exit"],
        exit_rule=last["exit_rule"],
        dev_no_exit=last["metric_no_exit"],
        dev_early_exit=last["metric_early_exit"],
        dev_flops_saved=last["flops_saved"],
        train_cpu_minutes=last["cpu_seconds"] / 60,
        train_wall_minutes=last["elapsed_seconds"] / 60,
        history=history,
        command=command,
        machine=f"{platform.processor() or platform.machine()}, torch threads {args.get('num_threads')}",
    )


def run(recipe: str, args: argparse.Namespace) -> Path:
    """Train (or resume) one recipe; returns its run directory."""
    from beexformer.errors import BeexError
    from beexformer.training.arguments import TrainingArguments
    from beexformer.training.trainer import train

    spec = RECIPES[recipe]
    budget = f"{args.steps}steps" if args.steps else f"{args.epochs:g}ep" if args.epochs else "defaults"
    out = Path(args.work) / f"{args.task}-{recipe}-{budget}-s{args.seed}"
    training = TrainingArguments(
        task=args.task,
        output=str(out),
        data_dir=args.data_dir,
        init="minilm",
        max_steps=args.steps,
        epochs=args.epochs,
        step_cap=0 if args.epochs else None,  # an explicit --epochs is trained in full
        seed=args.seed,
        num_threads=args.threads,
        progress=False,
        teacher=args.teacher if spec.needs_teacher else None,
        start_from=args.start_from if spec.start_from else None,
        model=dict(spec.model),
        **spec.training,
    )
    resume = (out / "checkpoints").is_dir()
    try:
        train(training, resume=resume, log=lambda m: print(f"  [{recipe}] {m}", flush=True))
    except BeexError as err:  # bad input, or a stop whose checkpoint is saved (rerunning the command resumes)
        raise SystemExit(f"[{recipe}] {err}") from None
    return out


def markdown_table(results: Path) -> str:
    """One row per result JSON, by task, then recipe in the order of RECIPES, then steps."""
    records = [json.loads(path.read_text()) for path in sorted(results.glob("*.json"))]
    records = [r for r in records if "heldout_no_exit" in r]  # older single-purpose artifacts have their own shape
    order = {name: i for i, name in enumerate(RECIPES)}
    records.sort(key=lambda r: (r["task"], order.get(r["recipe"], len(order)), r["steps"]))
    lines = [
        "| task | recipe | steps | held-out (last exit) | held-out, early exit | dev (notes) | dev, early exit "
        "| dev FLOPs saved | CPU min |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['task']} | {r['recipe']} | {r['steps']} | {100 * r['heldout_no_exit']:.2f} | "
            f"{100 * r['heldout_early_exit']:.2f} | {100 * r['dev_no_exit']:.2f} | {100 * r['dev_early_exit']:.2f} "
            f"| {100 * r['dev_flops_saved']:.1f} % | {r['train_cpu_minutes']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", action="append", default=[], help="recipe name (repeatable); see --list")
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.add_argument("--table", action="store_true", help="print the results as a markdown table and exit")
    p.add_argument("--record", metavar="RUN_DIR", help="write the result of a finished `beex train` run")
    p.add_argument("--task", default="sst2")
    p.add_argument("--teacher", help="float run of the same task (for the kd recipes)")
    p.add_argument("--start-from", help="finished run the *-from-* recipes start from (W1A32 + KD, or W1A4)")
    p.add_argument("--data-dir", default=None, help="GLUE directory (default: $GLUE_DIR)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps")
    budget.add_argument("--epochs", type=float, default=None, help="epochs, no step cap")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--work", default="runs/pretrained_recipe", help="where the runs are written")
    p.add_argument("--results", default=str(Path(__file__).parent / "results" / "pretrained_recipe"))
    args = p.parse_args(argv)
    results = Path(args.results)
    if args.table:
        print(markdown_table(results))
        return 0
    if args.list or not args.recipe:
        for name, spec in RECIPES.items():
            print(f"{name:16s} {spec.what}  {spec.training} {spec.model}")
        return 0
    unknown = [r for r in args.recipe if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s): {', '.join(unknown)}; see --list")
    if any(RECIPES[r].needs_teacher for r in args.recipe) and not (args.teacher or args.record):
        p.error("the kd recipes need --teacher RUN (a float run of the same task)")
    if any(RECIPES[r].start_from for r in args.recipe) and not (args.start_from or args.record):
        p.error("the *-from-* recipes need --start-from RUN (the finished run they start from)")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    results.mkdir(parents=True, exist_ok=True)
    if args.record:
        if len(args.recipe) != 1:
            p.error("--record takes exactly one --recipe (the one the run was made with)")
        runs = [(args.recipe[0], Path(args.record))]
    else:
        runs = [(recipe, run(recipe, args)) for recipe in args.recipe]
    for recipe, run_dir in runs:
        result = record(run_dir, recipe, command)
        path = results / f"{result.task}-{recipe}-{result.steps}-s{result.seed}.json"
        path.write_text(json.dumps(asdict(result), indent=1) + "\n")
        print(
            f"{result.task} {recipe}: held-out {100 * result.heldout_no_exit:.2f} "
            f"(early exit {100 * result.heldout_early_exit:.2f}), dev {100 * result.dev_no_exit:.2f}, "
            f"{result.train_cpu_minutes:.1f} CPU-min -> {path}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
