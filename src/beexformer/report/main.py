"""Command line of the reproduction report (`python benchmarks/reproduce.py --help`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from beexformer.errors import BeexError
from beexformer.report.plan import PROFILES

EXAMPLE = """examples:
  python benchmarks/reproduce.py --data-dir ../shared/data/glue --profile quick --jobs 2
  python benchmarks/reproduce.py --profile ci --out /tmp/r --docs /tmp/r/results.md --work-dir /tmp/r/runs
  python benchmarks/reproduce.py --render-only        # markdown + plots from the JSON alone"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="reproduce.py",
        description="Train and evaluate BEExformer (W1A32, W1A1, float32 twin, ablations) on GLUE, then write "
        "a results JSON, docs/results.md and PNG plots. Resumable: finished runs in --work-dir are skipped.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", choices=PROFILES, default="quick")
    p.add_argument("--data-dir", default="../shared/data/glue", help="GLUE directory (download-script layout)")
    p.add_argument("--tasks", help="comma-separated subset of tasks (default: the profile's, plus QNLI/QQP/MNLI "
                   "when their files exist)")  # fmt: skip
    p.add_argument("--out", help="directory of the JSON and the PNGs (default: benchmarks/results/reproduce; "
                   "with --profile pretrained: benchmarks/results/pretrained)")  # fmt: skip
    p.add_argument("--docs", help="markdown file to write (default: docs/results.md; with --profile pretrained: "
                   "docs/results-pretrained.md)")  # fmt: skip
    p.add_argument("--work-dir", help="run directories (default: runs/reproduce-PROFILE)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training and evaluation "
                   "(1 suits a shared machine; latency is always measured with 1)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process with "
                   "--threads threads (2 on a 2-core machine; latency is timed afterwards, alone)")  # fmt: skip
    p.add_argument("--render-only", action="store_true", help="only re-render markdown and plots from the JSON")
    p.add_argument("--add-baselines", action="store_true", help="compute the trivial and TF-IDF baselines "
                   "of the JSON's tasks into it (no training; needs --data-dir), then render")  # fmt: skip
    p.add_argument("--collect", action="store_true", help="write the JSON and markdown from the runs that "
                   "finished training in --work-dir (evaluating those not evaluated yet), training and timing "
                   "nothing: a report stopped part-way")  # fmt: skip
    p.add_argument("--carry", metavar="JSON", help="results JSON of an earlier session, whose run directories "
                   "are gone (another machine): its runs that match this plan exactly (spec, training arguments "
                   "with today's defaults, evaluation settings) are kept instead of trained again; a run that a "
                   "student still to train needs as teacher trains again")  # fmt: skip
    p.add_argument("--train-only", metavar="PATTERNS", help="comma-separated run-id patterns "
                   "(main-stsb-*-kd-s1): train only those runs and their teachers this time; the report still "
                   "covers the whole plan (runs from --carry or finished in --work-dir)")  # fmt: skip
    p.add_argument("--plan-only", action="store_true", help="print the plan and exit")
    p.add_argument("--estimate", action="store_true", help="time a few steps of each task and model of the "
                   "plan, write OUT/estimate-PROFILE.json with the expected duration, and exit")  # fmt: skip
    p.add_argument("--estimate-steps", type=int, default=6, help="optimizer steps timed per task and model")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs {args.jobs}: give at least 1")
    pretrained = args.profile == "pretrained"
    args.out = args.out or ("benchmarks/results/pretrained" if pretrained else "benchmarks/results/reproduce")
    args.docs = args.docs or ("docs/results-pretrained.md" if pretrained else "docs/results.md")
    return args


def _baselines(profile: dict, tasks: list[str], data_dir: str, cache_dir: Path | None = None) -> dict:
    """Trivial and TF-IDF baselines on the train and dev examples the profile's runs see."""
    from beexformer.report.baselines import report_baselines

    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise BeexError("the TF-IDF baselines need scikit-learn: pip install -e '.[bench]'") from None
    max_train = profile.get("training", {}).get("max_train_samples")
    return report_baselines(tasks, data_dir, max_train, profile.get("max_dev_samples"), cache_dir)


def _read_carry(path: str) -> dict:
    """The earlier results JSON of `--carry` (read before any work, so that a bad path fails at once)."""
    try:
        carry = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BeexError(f"--carry {path}: cannot read a results JSON ({err})") from None
    if not isinstance(carry, dict) or not isinstance(carry.get("runs"), dict):
        raise BeexError(f"--carry {path}: not a results JSON of benchmarks/reproduce.py (no 'runs')")
    return carry


def main(argv: list[str] | None = None) -> int:
    from beexformer.report.plan import EXTRA_TASKS, available_tasks, build_plan, profile_settings
    from beexformer.report.render import render
    from beexformer.report.render_pretrained import render_pretrained

    args = parse_args(argv)
    out = Path(args.out)
    json_path = out / "results.json"
    docs = Path(args.docs)
    running = False  # set once run_plan starts: only then is there a report to continue
    try:  # before any work, and not a report to continue: no "run the same command again"
        carry = _read_carry(args.carry) if args.carry else None
    except BeexError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.render_only or args.add_baselines:
            results = json.loads(json_path.read_text())
            if args.add_baselines:
                results["baselines"] = _baselines(results["profile"], results["tasks"], args.data_dir)
                json_path.write_text(json.dumps(results, indent=1) + "\n")
        else:
            from beexformer.report.runner import command_line, environment, run_plan, selected_runs

            wanted = tuple(t.strip().lower() for t in args.tasks.split(",")) if args.tasks else None
            settings = profile_settings(args.profile, wanted)
            if wanted is None and args.profile in ("quick", "full"):
                settings = profile_settings(args.profile, settings.tasks + EXTRA_TASKS)
            settings.threads = args.threads
            tasks, missing = available_tasks(args.data_dir, settings.tasks)
            plan = build_plan(settings, tasks)
            train_only = [p.strip() for p in args.train_only.split(",") if p.strip()] if args.train_only else None
            if train_only is not None:
                selected_runs(plan, train_only)  # a pattern that matches nothing fails before any work
            print(f"profile {args.profile}: {len(plan)} runs on {', '.join(tasks)}")
            for task, why in missing.items():
                print(f"  left out {task}: {why}")
            if args.plan_only:
                for spec in plan:
                    print(f"  {spec.run_id}: model {spec.model} training {spec.training}")
                return 0
            if not tasks:
                raise BeexError(f"no task has its files under {args.data_dir}")
            if args.estimate:
                from beexformer.report.estimate import estimate

                known = {}  # step costs another profile's estimate already measured
                for other in sorted(out.glob("estimate-*.json")):
                    known.update(json.loads(other.read_text()).get("measured", {}))
                result = estimate(settings, plan, args.data_dir, args.estimate_steps, known=known)
                out.mkdir(parents=True, exist_ok=True)
                path = out / f"estimate-{args.profile}.json"
                path.write_text(json.dumps(result, indent=1) + "\n")
                print(
                    f"{args.profile}: about {60 * result['total_cpu_hours']:.0f} min on an idle core "
                    f"(CPU time), {60 * result['total_wall_hours_at_this_load']:.0f} min at the current load; "
                    f"wrote {path}"
                )
                return 0
            work_dir = Path(args.work_dir or f"runs/reproduce-{args.profile}")
            header = {
                "command": command_line(),
                "data_dir": args.data_dir,
                "tasks": tasks,
                "missing_tasks": missing,
                "environment": environment(),
                "baselines": _baselines(settings.to_dict(), tasks, args.data_dir, work_dir),
            }
            if settings.from_scratch:
                from beexformer.report.reference import load_reference

                header["from_scratch"] = load_reference(settings.from_scratch, tasks).to_dict()
            started, running = time.perf_counter(), True
            results = run_plan(
                settings,
                plan,
                args.data_dir,
                work_dir,
                json_path,
                header,
                jobs=args.jobs,
                collect_only=args.collect,
                carry=carry,
                train_only=train_only,
            )
            print(f"all runs done in {(time.perf_counter() - started) / 60:.1f} min; wrote {json_path}")
        pretrained = results["profile"]["name"] == "pretrained"
        markdown = (render_pretrained if pretrained else render)(results, docs, out, json_path)
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(markdown)
        print(f"wrote {docs} and plots in {out}")
        return 0
    except BeexError as err:
        # An interrupted training (Ctrl-C) lands here too: its checkpoint is saved, and so is every finished
        # run in the results JSON; the same command continues.
        print(f"error: {err}", file=sys.stderr)
        if running and not args.collect:
            print("run the same command again to continue where the report stopped", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
