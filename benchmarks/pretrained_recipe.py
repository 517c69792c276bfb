"""Short SST-2 runs from all-MiniLM-L6-v2 (`--init minilm`) to compare training recipes for 1-bit weights.

    python benchmarks/pretrained_recipe.py --data-dir ../shared/data/glue --recipe binary-lr-5e-4 [--steps 300]
    python benchmarks/pretrained_recipe.py --list

Each recipe is a set of TrainingArguments / BEExformerConfig changes on top of the `--init` defaults. Recipes are
compared on the held-out slice of the training set the trainer sets aside (2,000 SST-2 training sentences),
never on the dev set: the dev metric is recorded beside it for the notes in docs/training.md only. One JSON per
recipe under benchmarks/results/pretrained_recipe/ (steps, held-out and dev metrics, CPU minutes, the command).
Not a test: each run takes minutes on two cores; run it under the heavy-compute lock.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

FLOAT = {"weight_bits": 32, "act_bits": 32, "embedding_bits": 32, "exit_bits": 32}

# name -> (TrainingArguments changes, BEExformerConfig changes, what it tests)
RECIPES: dict[str, tuple[dict, dict, str]] = {
    "float": ({}, FLOAT, "float MiniLM fine-tuned: the ceiling"),
    "naive": ({}, {}, "1-bit weights, one lr (5e-5) for everything"),
    "lr-2e-4": ({"lr": 2e-4}, {}, "1-bit weights, one higher lr for everything"),
    "binary-lr-5e-4": ({"binary_lr": 5e-4}, {}, "latent 1-bit weights at 5e-4, the rest at 5e-5"),
    "binary-lr-2e-3": ({"binary_lr": 2e-3}, {}, "latent 1-bit weights at 2e-3, the rest at 5e-5"),
    "binary-lr-5e-4-float-emb": ({"binary_lr": 5e-4}, {"embedding_bits": 32}, "as binary-lr-5e-4, float embeddings"),
    "binary-lr-5e-4-no-wd": ({"binary_lr": 5e-4, "binary_weight_decay": 0.0}, {}, "as binary-lr-5e-4, no decay"),
    "binary-lr-5e-4-slfn": ({"binary_lr": 5e-4}, {"ffn": "ffn_slfn"}, "as binary-lr-5e-4, gated SLFN branch"),
}


def run(recipe: str, args: argparse.Namespace) -> dict:
    from beexformer.training.arguments import TrainingArguments
    from beexformer.training.trainer import train

    changes, model, what = RECIPES[recipe]
    out = Path(args.work) / f"{recipe}-{args.steps}-s{args.seed}"
    resume = (out / "checkpoints").is_dir()
    training = TrainingArguments(
        task="sst2",
        output=str(out),
        data_dir=args.data_dir,
        init="minilm",
        max_steps=args.steps,
        seed=args.seed,
        progress=False,
        save_every_steps=args.steps,
        model=model,
        **changes,
    )
    started = time.perf_counter()
    summary = train(training, resume=resume, log=lambda m: print(f"  [{recipe}] {m}", flush=True))
    last = summary["history"][-1]
    return {
        "recipe": recipe,
        "what": what,
        "task": "sst2",
        "steps": summary["steps"],
        "seed": args.seed,
        "training_arguments": training.to_dict(),
        # The model after the last step, judged on the held-out slice of train (what recipes are compared on).
        "heldout_accuracy_no_exit": last["heldout_metric_no_exit"],
        "heldout_accuracy_early_exit": last["heldout_metric_early_exit"],
        "heldout_flops_saved": last["heldout_flops_saved"],
        "exit_rule": last["exit_rule"],
        # Dev, for the notes only: no choice is made on it.
        "dev_accuracy_no_exit": last["metric_no_exit"],
        "dev_accuracy_early_exit": last["metric_early_exit"],
        "dev_flops_saved": last["flops_saved"],
        "train_cpu_minutes": summary["cpu_seconds"] / 60,
        "train_wall_minutes": summary["elapsed_seconds"] / 60,
        "wall_minutes_this_session": (time.perf_counter() - started) / 60,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, torch threads: default (2 on the 2-core box)",
    }


def markdown_table(results: Path) -> str:
    """One row per recipe JSON, in the order of RECIPES."""
    records = [json.loads(path.read_text()) for path in sorted(results.glob("*.json"))]
    order = {name: i for i, name in enumerate(RECIPES)}
    records.sort(key=lambda r: (order.get(r["recipe"], len(order)), r["steps"]))
    lines = [
        "| recipe | steps | held-out acc. (last exit) | with early exit | held-out FLOPs saved | dev acc. (notes) "
        "| CPU min |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['recipe']} | {r['steps']} | {100 * r['heldout_accuracy_no_exit']:.2f} | "
            f"{100 * r['heldout_accuracy_early_exit']:.2f} | {100 * r['heldout_flops_saved']:.1f} % | "
            f"{100 * r['dev_accuracy_no_exit']:.2f} | {r['train_cpu_minutes']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", action="append", default=[], help="recipe name (repeatable); see --list")
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    p.add_argument("--table", action="store_true", help="print the results as a markdown table and exit")
    p.add_argument("--data-dir", default=None, help="GLUE directory (default: $GLUE_DIR)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--work", default="runs/pretrained_recipe", help="where the runs are written")
    p.add_argument("--results", default=str(Path(__file__).parent / "results" / "pretrained_recipe"))
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(Path(args.results)))
        return 0
    if args.list or not args.recipe:
        for name, (changes, model, what) in RECIPES.items():
            print(f"{name:28s} {what}  {changes} {model}")
        return 0
    unknown = [r for r in args.recipe if r not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s): {', '.join(unknown)}; see --list")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    for recipe in args.recipe:
        record = run(recipe, args)
        path = results / f"{recipe}-{args.steps}-s{args.seed}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(
            f"{recipe}: held-out {100 * record['heldout_accuracy_no_exit']:.2f} "
            f"(early exit {100 * record['heldout_accuracy_early_exit']:.2f}), "
            f"{record['train_cpu_minutes']:.1f} CPU-min -> {path}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
