"""Train and evaluate every run of a plan, resumably, and keep the results JSON up to date.

Each run lives in WORK_DIR/<run_id>/: the trainer's run directory, plus `done.json` (written once training
finished) and `record.json` (its evaluation). A run with `best/` and `done.json` is not trained again; a run
with `record.json` for the same spec and the same stored exit rule is not evaluated again; a run with
checkpoints but no `done.json` is resumed from its newest checkpoint. The results JSON is rewritten after every
run, so an interrupted report loses at most the run in progress.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from beexformer.errors import BeexError
from beexformer.jsonio import write_json
from beexformer.report.plan import ProfileSettings, RunSpec

if TYPE_CHECKING:  # the trainer imports torch: only when a run trains
    from beexformer.training.arguments import TrainingArguments

SCHEMA_VERSION = 1
DONE = "done.json"
RECORD = "record.json"


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ------------------------------------------------------------------------------------------------ training


def train_run(
    spec: RunSpec, run_dir: Path, data_dir: str, log: Callable[[str], None], threads: int | None = None
) -> dict[str, Any]:
    """Train (or resume, or skip) one run; returns the contents of its done.json."""
    from beexformer.training import checkpoint as ckpt
    from beexformer.training.trainer import train

    done_path = run_dir / DONE
    done = finished_training(spec, run_dir)
    if done is not None:
        return done
    teacher = None if spec.teacher is None else str(needed_dir(spec, spec.teacher, run_dir))
    start = None if spec.start_from is None else str(needed_dir(spec, spec.start_from, run_dir))
    args = training_arguments(spec, run_dir, data_dir, threads, teacher, start)
    resume = ckpt.latest_checkpoint(run_dir / "checkpoints") is not None
    log(f"[{spec.run_id}] {'resuming' if resume else 'training'} in {run_dir}")
    started = time.perf_counter()
    summary = train(args, resume=resume, log=lambda m: log(f"[{spec.run_id}] {m}"))
    done = {
        "spec": spec.to_dict(),
        "training_arguments": args.to_dict(),
        "steps": summary["steps"],
        "epochs_completed": summary["epochs_completed"],
        # The trainer's own clock covers every session of a resumed run; the wall clock only this one.
        "train_minutes": summary["elapsed_seconds"] / 60,
        "wall_minutes_this_session": (time.perf_counter() - started) / 60,
        "history": summary["history"],
    }
    write_json(done_path, done, indent=1)
    return done


def training_arguments(
    spec: RunSpec,
    run_dir: Path,
    data_dir: str,
    threads: int | None = None,
    teacher: str | None = None,
    start_from: str | None = None,
) -> TrainingArguments:
    """The trainer's arguments for `spec` in `run_dir`, as given (the trainer fills its defaults)."""
    from beexformer.training.arguments import TrainingArguments

    training = dict(spec.training)
    if teacher is not None:
        training["teacher"] = teacher
    if start_from is not None:
        training["start_from"] = start_from
    return TrainingArguments(
        task=spec.task,
        output=str(run_dir),
        data_dir=data_dir,
        seed=spec.seed,
        model=dict(spec.model),
        progress=False,
        num_threads=threads,
        **training,
    )


def finished_training(spec: RunSpec, run_dir: Path) -> dict[str, Any] | None:
    """The done.json of `spec` when it has finished training in `run_dir` (its evaluation may still be
    missing), else None."""
    from beexformer.training.trainer import BEST

    done = _read_json(run_dir / DONE)
    if done is not None and (run_dir / BEST).is_dir() and done.get("spec") == spec.to_dict():
        return done
    return None


def needed_dir(spec: RunSpec, run_id: str, run_dir: Path) -> Path:
    """The run directory of `run_id`, a run `spec` needs (its teacher, or the run it starts from): trained
    before it in the same work dir (`run_plan` hands a run out only once what it needs is done)."""
    path = run_dir.parent / run_id
    if not (path / DONE).is_file():
        raise BeexError(f"{spec.run_id}: it needs {run_id}, which has not finished training in {path.parent}")
    return path


def train_cpu_minutes(run_dir: Path) -> float | None:
    """CPU minutes of the training process (all its threads) by the trainer's own count, from the last
    checkpoint: on a shared machine the trainer's wall clock says more about the other jobs than this one."""
    from beexformer.training import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        return None
    seconds = ckpt.read_trainer_state(latest).get("cpu_seconds")
    return None if seconds is None else seconds / 60


def stored_exit(run_dir: Path) -> dict[str, Any]:
    """The exit rule and threshold stored with the evaluated model (its task.json)."""
    info = json.loads((final_model_dir(run_dir) / "task.json").read_text())
    return {"exit_rule": info.get("exit_rule"), "exit_threshold": info.get("exit_threshold")}


def final_model_dir(run_dir: Path) -> Path:
    """The model after the last optimizer step (not the best one on dev: no selection on the dev set)."""
    from beexformer.training import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if latest is not None and (latest / "model").is_dir():
        return latest / "model"
    return run_dir / "best"


# ------------------------------------------------------------------------------------------------ evaluation


def rules_for(is_regression: bool) -> list[str]:
    from beexformer.exits import CLASSIFICATION_RULES

    return ["regression_patience"] if is_regression else list(CLASSIFICATION_RULES)


def _standard_error(metric_name: str, value: float, n: int) -> float | None:
    """Binomial standard error of an accuracy (the noise floor of a dev-set difference); None otherwise."""
    if metric_name != "accuracy" or n == 0:
        return None
    return float(np.sqrt(max(value * (1 - value), 0.0) / n))


@dataclasses.dataclass(kw_only=True)
class RunSize:
    """A run's size: THE size ratio (float32 checkpoint file over packed file) and the parameter accounting."""

    float32_checkpoint_bytes: int
    accounting_ratio: float  # parameter accounting, not the size ratio
    binary_share: float
    total_params: int
    packed_bytes: int | None  # None for the float32 twin, which has nothing to pack
    size_ratio: float
    tokenizer_bytes: int | None = None
    packed_parts: dict[str, int] | None = None
    size_ratio_without_tokenizer: float | None = None

    def to_dict(self) -> dict[str, Any]:
        optional = ("tokenizer_bytes", "packed_parts", "size_ratio_without_tokenizer")
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k not in optional}


@dataclasses.dataclass(kw_only=True)
class RunEvaluation:
    """What `evaluate_run` measures on one trained run; `to_dict` is its record in results.json."""

    spec: dict[str, Any]
    model_dir: str
    config: dict[str, Any]
    metric_name: str
    n_dev: int
    exit_rule: str
    exit_threshold: float | None
    metric_no_exit: float
    metric_early_exit: float
    metrics_no_exit: dict[str, float]
    metrics_early_exit: dict[str, float]
    metric_per_exit: list[float]
    standard_error_no_exit: float | None
    exit_histogram: list[int]
    mean_exit_block: float
    flops_saved: float
    agreement_with_last_exit: float
    # The fractional-entropy rule compares two blocks, so nothing leaves before block 2: this caps its saving
    # whatever the threshold.
    flops_saved_cap_block2: float
    rules: dict[str, dict[str, Any]]  # each rule at its default threshold
    sweep: list[dict[str, Any]]  # evaluation.SweepRow as dicts
    packed_metric_early_exit: float | None = None  # binarized runs: the packed file's dev metric
    packed_max_abs_logit_diff: float | None = None
    size: RunSize
    eval_minutes: float

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["size"] = self.size.to_dict()
        for key in ("packed_metric_early_exit", "packed_max_abs_logit_diff"):
            if out[key] is None:
                del out[key]
        return out


def evaluate_run(
    spec: RunSpec, run_dir: Path, data_dir: str, settings: ProfileSettings, log: Callable[[str], None]
) -> RunEvaluation:
    """Dev metrics with and without early exit, every rule's default and sweep, and sizes (latency is
    `measure_run_latency`, timed apart so that no other run shares the CPU)."""
    import torch

    from beexformer.accounting import expected_cost
    from beexformer.data.glue import get_task, load_split
    from beexformer.evaluation import evaluation_report, rule_result, sweep_rows
    from beexformer.exits import build_exit_rule
    from beexformer.inference import PackedPredictor, TorchPredictor

    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    task = get_task(spec.task)
    examples = load_split(task, "dev", data_dir)
    if settings.max_dev_samples:
        examples = examples[: settings.max_dev_samples]
    model_dir = final_model_dir(run_dir)
    predictor = TorchPredictor(model_dir)
    config = predictor.config
    data = predictor.exit_logits(examples)
    # The rule stored with the model at training time: from scratch the task's default, fixed a priori
    # (delta = 0.05); with --init the threshold the trainer chose on its held-out slice of train. Never dev.
    rule = predictor.default_rule()
    report = evaluation_report(task, config, data, rule)
    n = report.n_samples
    rules = rules_for(config.is_regression)
    defaults = {}
    for name in rules:
        r = rule_result(task, config, data, build_exit_rule(name))
        defaults[name] = {"threshold": r.threshold, "metric": r.metric, "flops_saved": r.flops_saved,
                          "mean_exit_block": r.mean_exit_block, "exit_histogram": r.exit_histogram}  # fmt: skip
    size, packed_path = _measure_size(predictor, model_dir, run_dir)
    packed_metric = packed_diff = None
    if packed_path is not None:
        # The packed runtime must give the same answers as PyTorch: its dev metric with early exit.
        packed_data = PackedPredictor(packed_path).exit_logits(examples)
        packed_metric = evaluation_report(task, config, packed_data, rule).metric_early_exit
        packed_diff = float(np.abs(packed_data.logits - data.logits).max())
        packed_path.unlink()  # the file was measured; the report keeps only its numbers
    result = RunEvaluation(
        spec=spec.to_dict(),
        model_dir=str(model_dir),
        config=config.to_dict(),
        metric_name=task.main_metric,
        n_dev=n,
        exit_rule=rule.name,
        exit_threshold=getattr(rule, rule.threshold_name),
        metric_no_exit=report.metric_no_exit,
        metric_early_exit=report.metric_early_exit,
        metrics_no_exit=report.metrics_no_exit,
        metrics_early_exit=report.metrics_early_exit,
        metric_per_exit=report.metric_per_exit,
        standard_error_no_exit=_standard_error(task.main_metric, report.metric_no_exit, n),
        exit_histogram=report.exit_histogram,
        mean_exit_block=report.mean_exit_block,
        flops_saved=report.flops_saved,
        agreement_with_last_exit=report.agreement_with_last_exit,
        flops_saved_cap_block2=expected_cost(config, [min(2, config.n_blocks)] * n, data.lengths).saved,
        rules=defaults,
        sweep=[dataclasses.asdict(row) for row in sweep_rows(task, config, data, rules)],
        packed_metric_early_exit=packed_metric,
        packed_max_abs_logit_diff=packed_diff,
        size=size,
        eval_minutes=(time.perf_counter() - started) / 60,
    )
    log(
        f"[{spec.run_id}] {task.main_metric} no exit {100 * result.metric_no_exit:.2f}, early exit "
        f"{100 * result.metric_early_exit:.2f}, FLOPs saved {100 * result.flops_saved:.1f} %, "
        f"size {size.size_ratio:.2f}x ({result.eval_minutes:.1f} min to evaluate)"
    )
    return result


def _measure_size(predictor, model_dir: Path, run_dir: Path) -> tuple[RunSize, Path | None]:
    """The float32 checkpoint on disk against the packed export on disk (exported to run_dir/model.beex for
    a binarized model, which the caller evaluates and then deletes)."""
    from beexformer.accounting import size_report
    from beexformer.engine import packed_summary
    from beexformer.engine.export import export_model

    accounting = size_report(predictor.model)
    common = {
        "float32_checkpoint_bytes": (model_dir / "model.safetensors").stat().st_size,
        "accounting_ratio": accounting.accounted_ratio,
        "binary_share": accounting.binary_share,
        "total_params": accounting.total_params,
    }
    if predictor.config.weight_bits != 1:
        return RunSize(**common, packed_bytes=None, size_ratio=1.0), None
    task_info = json.loads((model_dir / "task.json").read_text())
    packed_path = export_model(predictor.model, model_dir, run_dir / "model.beex", str(model_dir), task_info)
    summary = packed_summary(packed_path)  # THE size ratio: the checkpoint file over the packed file, both real
    sizes = summary.sizes
    size = RunSize(
        **common,
        packed_bytes=sizes.packed_file_bytes,
        size_ratio=sizes.size_ratio,
        tokenizer_bytes=sizes.tokenizer_bytes,
        packed_parts=summary.parts,
        size_ratio_without_tokenizer=round(sizes.size_ratio_without_tokenizer, 2),
    )
    return size, packed_path


def measure_run_latency(spec: RunSpec, run_dir: Path, data_dir: str, settings: ProfileSettings) -> dict[str, Any]:
    """Packed runtime against float32 PyTorch on the first dev samples (see `report.latency`)."""
    from beexformer.data.glue import get_task, load_split
    from beexformer.engine.export import export_model
    from beexformer.inference import PackedPredictor, TorchPredictor
    from beexformer.report.latency import measure_latency

    model_dir = final_model_dir(run_dir)
    predictor = TorchPredictor(model_dir)
    task_info = json.loads((model_dir / "task.json").read_text())
    packed_path = export_model(predictor.model, model_dir, run_dir / "latency.beex", str(model_dir), task_info)
    try:
        packed = PackedPredictor(packed_path)
        subset = load_split(get_task(spec.task), "dev", data_dir)[: settings.latency_samples]
        ids, segs = packed.packed.encode([e.text_a for e in subset], [e.text_b for e in subset])
        return measure_latency(
            predictor.model,
            packed.packed,
            ids,
            segs,
            predictor.default_rule(),
            reps=settings.latency_reps,
            threads=settings.latency_threads,
            batch1_samples=settings.latency_batch1_samples,
        )
    finally:
        packed_path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------ runs of an earlier session

# Training arguments that say where a run lived or how it was watched, not what it trained.
_PLACE_ONLY = ("output", "data_dir", "num_threads", "progress", "teacher", "start_from")


def _same_training(record: dict[str, Any], spec: RunSpec, data_dir: str) -> bool:
    """Whether `record` trained exactly what `spec` trains today: the same arguments once the trainer's
    defaults are filled in (a default changed since, such as the binarization ramp, makes it another run)."""
    from beexformer.errors import ConfigError
    from beexformer.training.arguments import TrainingArguments

    saved = record.get("training_arguments")
    if not isinstance(saved, dict):
        return False
    try:
        then = TrainingArguments.from_saved(saved).validate().to_dict()
        # the places of the teacher and of the start are not compared, but whether there is one sets defaults
        # (a distilled run's epochs, a started run's ramp)
        now = training_arguments(spec, Path("."), data_dir, teacher=spec.teacher, start_from=spec.start_from)
        now = now.validate().to_dict()
    except (ConfigError, TypeError):
        return False
    return all(then[k] == now[k] for k in now if k not in _PLACE_ONLY)


def carried_records(
    plan: list[RunSpec],
    previous: dict[str, Any],
    work_dir: Path,
    data_dir: str,
    settings: ProfileSettings,
    chosen: set[str] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The records of an earlier report (`--carry`: its run directories are on another machine) that stand
    for runs of this plan: same spec, same resolved training arguments, same evaluation settings, and not
    finished in `work_dir` (a local run wins). A run that a student still to be trained (one of `chosen`, when
    given) needs as its teacher is not carried: the student needs its weights, not its numbers. Returns the
    carried records, and apart the matching records of the teachers that train again."""
    earlier = previous.get("runs", {})
    carried = {}
    for spec in plan:
        record = earlier.get(spec.run_id)
        if (
            spec.same_as is None
            and isinstance(record, dict)
            and record.get("spec") == spec.to_dict()
            and record.get("evaluation") == eval_settings(settings)
            and _same_training(record, spec, data_dir)
            and finished_training(spec, work_dir / spec.run_id) is None
        ):
            carried[spec.run_id] = record
    to_train = [s for s in plan if s.run_id not in carried and (chosen is None or s.run_id in chosen)]
    taught_now = {n for s in to_train if finished_training(s, work_dir / s.run_id) is None for n in s.needs}
    kept = {run_id: record for run_id, record in carried.items() if run_id not in taught_now}
    return kept, {run_id: record for run_id, record in carried.items() if run_id in taught_now}


# ------------------------------------------------------------------------------------------------ the whole


def _in_plan_order(plan: list[RunSpec], runs: dict[str, Any]) -> dict[str, Any]:
    return {spec.run_id: runs[spec.run_id] for spec in plan if spec.run_id in runs}


def eval_settings(settings: ProfileSettings) -> dict[str, Any]:
    """The profile knobs an evaluation depends on: a stored record made with others is redone."""
    return {
        "max_dev_samples": settings.max_dev_samples,
        "latency_samples": settings.latency_samples,
        "latency_batch1_samples": settings.latency_batch1_samples,
        "latency_reps": settings.latency_reps,
        "latency_threads": settings.latency_threads,
    }


def environment() -> dict[str, Any]:
    """Versions and machine, recorded once per report."""
    import numba
    import torch

    from beexformer.engine import cpu

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    info = cpu.summary()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "cpu": info.get("model"),
        "popcount_path": info.get("popcount_path"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "blas_threads_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "git_commit": commit,
    }


def prepare_run(
    spec: RunSpec, run_dir: Path, data_dir: str, settings: ProfileSettings, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train and evaluate one run (each skipped when already done); returns its record, without latency.

    A top-level function, so that a worker process of `run_plan(jobs > 1)` can run it."""
    done = train_run(spec, run_dir, data_dir, log, settings.threads)
    record = _read_json(run_dir / RECORD)
    key = {
        "spec": spec.to_dict(),
        "trained_steps": done["steps"],
        "evaluation": eval_settings(settings),
        "stored_exit": stored_exit(run_dir),  # a threshold chosen again (threshold_choice.py --write) re-evaluates
    }
    if record is None or any(record.get(k) != v for k, v in key.items()):
        record = {**evaluate_run(spec, run_dir, data_dir, settings, log).to_dict(), **key}
        write_json(run_dir / RECORD, record, indent=1)
    return {
        **record,
        "training_arguments": done["training_arguments"],
        "train_minutes": done["train_minutes"],
        "train_cpu_minutes": train_cpu_minutes(run_dir),
        "epochs_completed": done["epochs_completed"],
        "history": done["history"],
    }


def _die_with_parent() -> None:
    """Worker initializer: on Linux, ask for SIGTERM when the parent dies, so that a killed report does not
    leave workers training on (the trainer saves a checkpoint on SIGTERM and stops)."""
    import contextlib
    import ctypes
    import signal

    # Elsewhere than Linux, workers finish their current run, and the next report run resumes the rest.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _prepare_in_worker(spec: RunSpec, run_dir: Path, data_dir: str, settings: ProfileSettings) -> dict[str, Any]:
    import torch

    torch.set_num_threads(settings.threads)
    return prepare_run(spec, run_dir, data_dir, settings, log=lambda m: print(m, flush=True))


def selected_runs(plan: list[RunSpec], patterns: list[str]) -> set[str]:
    """The run ids of `plan` that match one of the shell-style `patterns` (`main-stsb-*-kd-s1`), and the
    teachers of those (a student needs its teacher's weights). A pattern that matches no run is an error."""
    from fnmatch import fnmatchcase

    unmatched = [p for p in patterns if not any(fnmatchcase(s.run_id, p) for s in plan)]
    if unmatched:
        raise BeexError(f"--train-only {','.join(unmatched)}: matches no run of the plan (see --plan-only)")
    chosen = {s.run_id for s in plan if any(fnmatchcase(s.run_id, p) for p in patterns)}
    return chosen | {n for s in plan if s.run_id in chosen for n in s.needs}


def _ready(pending: list[RunSpec], done: set[str], failed: dict[str, str], slots: int) -> list[RunSpec]:
    """Take up to `slots` runs off `pending`, in plan order, whose needs (teacher, start) are all done; a run
    one of whose needs failed fails too (recorded in `failed`), and one still waiting for a need stays in
    `pending`."""
    ready = []
    for spec in list(pending):
        lost = [n for n in spec.needs if n in failed]
        if lost:
            pending.remove(spec)
            failed[spec.run_id] = f"{lost[0]}, which it needs, failed"
        elif len(ready) < slots and all(n in done for n in spec.needs):
            pending.remove(spec)
            ready.append(spec)
    return ready


def run_plan(
    settings: ProfileSettings,
    plan: list[RunSpec],
    data_dir: str,
    work_dir: Path,
    results_path: Path,
    header: dict[str, Any],
    log: Callable[[str], None] = print,
    jobs: int = 1,
    collect_only: bool = False,
    carry: dict[str, Any] | None = None,
    train_only: list[str] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every run (skipping what is done), writing `results_path` after each run.

    With `collect_only`, nothing is trained or timed: the results are those of the runs that finished training
    in `work_dir` (a report stopped part-way), each evaluated if its evaluation is missing.

    With `carry` (the results JSON of an earlier session), the runs `carried_records` accepts are taken from
    it as they are, marked `carried: true`, and neither trained nor evaluated here.

    With `train_only` (run-id patterns, `selected_runs`), only the matching runs and their teachers train; the
    report still covers the whole plan, with the other runs taken from `carry` or from `work_dir` when there.

    With `jobs > 1`, runs train and evaluate in that many worker processes (one torch thread each by
    default). Latency is timed afterwards, one run at a time in this process, so that no training shares
    the CPU with a timing."""
    from beexformer.report.aggregate import aggregate

    started = time.perf_counter()
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **header,
        "profile": settings.to_dict(),
        "plan": [spec.run_id for spec in plan],
        "runs": {},
    }

    # A carried teacher that trains again for a new student keeps its earlier record in the JSON until the new
    # one lands: a report stopped during that training must not lose the run (a later --carry needs it). It
    # stays out of results["runs"], where it would count as trained and let its students start.
    standing_in: dict[str, dict[str, Any]] = {}

    def save() -> None:
        # Runs in plan order whatever order the workers finished in, so the JSON does not depend on timing.
        results["runs"] = _in_plan_order(plan, results["runs"])
        written = {**results, "runs": _in_plan_order(plan, {**standing_in, **results["runs"]})}
        results["aggregate"] = written["aggregate"] = aggregate(written)
        results["minutes_this_session"] = written["minutes_this_session"] = (time.perf_counter() - started) / 60
        write_json(results_path, written, indent=1)

    def add(spec: RunSpec, record: dict[str, Any]) -> None:
        results["runs"][spec.run_id] = record
        for other in plan:  # reuse: an ablation baseline identical to a main run
            if other.same_as == spec.run_id:
                results["runs"][other.run_id] = {**record, "spec": other.to_dict(), "reused_from": spec.run_id}
        save()

    trained = [spec for spec in plan if spec.same_as is None]
    chosen = selected_runs(trained, train_only) if train_only is not None else None
    if carry:
        carried, retrained = carried_records(plan, carry, work_dir, data_dir, settings, chosen)
        standing_in.update({run_id: {**record, "carried": True} for run_id, record in retrained.items()})
        for spec in trained:
            if spec.run_id in carried:
                add(spec, {**carried[spec.run_id], "carried": True})
        trained = [spec for spec in trained if spec.run_id not in carried]
        log(f"carried {len(carried)} runs from the earlier results; {len(trained)} to train or collect here")
    if chosen is not None:
        trained = [s for s in trained if s.run_id in chosen or finished_training(s, work_dir / s.run_id)]
    # What already finished training in work_dir is collected first, so that the JSON holds it while the
    # rest trains (sorted is stable: plan order within each group; a student never waits for a teacher here).
    trained.sort(key=lambda spec: finished_training(spec, work_dir / spec.run_id) is None)
    if collect_only:
        trained = [spec for spec in trained if finished_training(spec, work_dir / spec.run_id) is not None]
        if not trained and not results["runs"]:
            raise BeexError(f"--collect: no run of this plan has finished training in {work_dir} (check --work-dir)")
        jobs = 1
    failed: dict[str, str] = {}  # run id -> error, with jobs > 1 (one process dying must not stall the rest)
    save()  # the header (baselines, plan) is on disk before the first run, so a partial report renders
    if jobs > 1:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        log(f"training {len(trained)} runs in {jobs} worker processes")
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
        pending, running, finished = list(trained), {}, 0
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_die_with_parent) as pool:
            while pending or running:
                for spec in _ready(pending, set(results["runs"]), failed, jobs - len(running)):
                    job = pool.submit(_prepare_in_worker, spec, work_dir / spec.run_id, data_dir, settings)
                    running[job] = spec
                if not running:
                    break  # what is left waits for a run this plan never trains (failed below)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    spec, finished = running.pop(future), finished + 1
                    try:
                        add(spec, future.result())
                    except Exception as err:  # noqa: BLE001 - one failed run must not hold back the others' results
                        failed[spec.run_id] = f"{type(err).__name__}: {err}"
                        log(f"run {finished}/{len(trained)} FAILED: {spec.run_id}: {failed[spec.run_id]}")
                        continue
                    log(f"run {finished}/{len(trained)} done: {spec.run_id}")
        for spec in pending:  # nothing left to run, yet these never got what they need
            failed[spec.run_id] = f"it needs {', '.join(spec.needs)}, which this plan does not train"
    else:
        for index, spec in enumerate(trained, start=1):
            log(f"run {index}/{len(trained)}: {spec.run_id}")
            add(spec, prepare_run(spec, work_dir / spec.run_id, data_dir, settings, log))
    if failed:
        results["failed"] = failed
        save()
        raise BeexError(f"{len(failed)} of {len(trained)} runs failed ({', '.join(failed)}); the others are in "
                        f"{results_path}; run again to retry the failed ones")  # fmt: skip

    timed = [spec for spec in trained if settings.measures_latency(spec) and not collect_only]
    for index, spec in enumerate(timed, start=1):
        run_dir = work_dir / spec.run_id
        record = _read_json(run_dir / RECORD)
        if record.get("latency") is None:
            log(f"latency {index}/{len(timed)}: {spec.run_id}")
            latency_started = time.perf_counter()
            record["latency"] = measure_run_latency(spec, run_dir, data_dir, settings)
            record["eval_minutes"] += (time.perf_counter() - latency_started) / 60
            write_json(run_dir / RECORD, record, indent=1)
        timing = {"latency": record["latency"], "eval_minutes": record["eval_minutes"]}
        add(spec, {**results["runs"][spec.run_id], **timing})
    results["complete"] = len(results["runs"]) == len(plan)
    save()
    return results


def command_line() -> str:
    return " ".join(["python", *sys.argv])
