"""How long a profile will take: time a few optimizer steps of each (task, model) of the plan, then multiply.

    python benchmarks/reproduce.py --profile quick --estimate [--estimate-steps 6]

Per distinct (task, model config) the estimator builds the real Trainer (tokenizer, data, model), times
`--estimate-steps` optimizer steps after one warm-up step, and one dev pass. It reports both wall-clock and
process CPU seconds: on a shared machine the wall clock is inflated by the other jobs, while CPU time of a
one-thread run approximates the wall clock on an idle core. Evaluation beyond the dev passes (export, packed
pass, latency) is added as a measured-elsewhere constant per binarized main run (`EVAL_EXTRA_SECONDS`).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from beexformer.report.plan import ProfileSettings, RunSpec

# Export, the packed dev pass and latency (64 inputs at batch 1, 256 at batch 64, warm-up + 3 repetitions)
# of a default-size binarized model: the latency part took 17 s for W1A32 with one BLAS thread (measured
# with report.latency on SST-2 dev, 2026-11-23); 30 s per binarized main run covers the rest too.
EVAL_EXTRA_SECONDS = {"W1A32": 30.0, "W1A1": 30.0, "float32": 0.0}


def _time_steps(spec: RunSpec, data_dir: str, steps: int, threads: int) -> dict[str, Any]:
    from beexformer.evaluation import collect_exit_logits
    from beexformer.training.arguments import TrainingArguments
    from beexformer.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        training = {k: v for k, v in spec.training.items() if k not in ("max_steps", "epochs")}
        args = TrainingArguments(
            task=spec.task,
            output=str(Path(tmp) / "run"),
            data_dir=data_dir,
            seed=spec.seed,
            model=dict(spec.model),
            progress=False,
            num_threads=threads,
            max_steps=10_000,
            **training,
        )
        t0 = time.perf_counter()
        trainer = Trainer(args, log=lambda message: None)
        setup = time.perf_counter() - t0
        trainer.model.train()
        batches = iter(trainer.train_loader)
        wall, cpu = [], []
        for i in range(steps + 1):
            batch = next(batches, None)
            if batch is None:  # a tiny training set (WNLI at batch 64 has 10 batches)
                break
            w0, c0 = time.perf_counter(), time.process_time()
            trainer._step(batch)  # one optimizer step, exactly as the training loop runs it
            if i:  # the first step pays for lazy initialisation
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
        w0, c0 = time.perf_counter(), time.process_time()
        collect_exit_logits(trainer.accelerator.unwrap_model(trainer.model), trainer.dev_loader)
        dev_wall, dev_cpu = time.perf_counter() - w0, time.process_time() - c0
        return {
            "steps_per_epoch": len(trainer.train_loader),
            "setup_seconds": setup,
            "step_wall_seconds": sum(wall) / max(len(wall), 1),
            "step_cpu_seconds": sum(cpu) / max(len(cpu), 1),
            "dev_wall_seconds": dev_wall,
            "dev_cpu_seconds": dev_cpu,
        }


def estimate(
    settings: ProfileSettings,
    plan: list[RunSpec],
    data_dir: str,
    steps: int = 6,
    log: Callable[[str], None] = print,
    known: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measured step costs and the estimated minutes of every run and of the whole plan. `known`: step costs
    measured before (another profile's estimate), reused for the same task, model and data budget."""
    import os

    measured: dict[str, dict[str, Any]] = {}
    known = known or {}
    runs = []
    total_cpu = total_wall = 0.0
    for spec in plan:
        if spec.same_as is not None:
            continue
        key = json.dumps([spec.task, spec.model, spec.training.get("max_train_samples")], sort_keys=True)
        if key not in measured:
            measured[key] = known.get(key) or _time_steps(spec, data_dir, steps, settings.threads)
            m = measured[key]
            log(
                f"{spec.task:>5} {spec.variant:<20} step {m['step_cpu_seconds']:.3f} s CPU / "
                f"{m['step_wall_seconds']:.3f} s wall, {m['steps_per_epoch']} steps per epoch "
                f"(load {os.getloadavg()[0]:.1f})"
            )
        m = measured[key]
        n_steps = spec.training.get("max_steps") or math.ceil(spec.training["epochs"] * m["steps_per_epoch"])
        n_evals = max(1, math.ceil(spec.training["epochs"]))  # the trainer evaluates at every epoch end
        # the constant was measured on the default size; the tiny ci model's export and latency take seconds
        default_size = not any(k in spec.model for k in ("d_model", "n_blocks", "d_ff"))
        extra = EVAL_EXTRA_SECONDS.get(spec.variant, 0.0) if spec.group == "main" and default_size else 0.0
        # + 1 dev pass of our own evaluation, + setup (tokenizer training, data loading)
        cpu = m["setup_seconds"] + n_steps * m["step_cpu_seconds"] + (n_evals + 1) * m["dev_cpu_seconds"] + extra
        wall = m["setup_seconds"] + n_steps * m["step_wall_seconds"] + (n_evals + 1) * m["dev_wall_seconds"] + extra
        runs.append({"run_id": spec.run_id, "steps": n_steps, "cpu_minutes": cpu / 60, "wall_minutes": wall / 60})
        total_cpu += cpu
        total_wall += wall
    return {
        "profile": settings.name,
        "threads": settings.threads,
        "load_average": list(os.getloadavg()),
        "measured": measured,
        "runs": runs,
        "total_cpu_hours": total_cpu / 3600,
        "total_wall_hours_at_this_load": total_wall / 3600,
    }
