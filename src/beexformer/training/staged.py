"""Staged training (BiT's multi-step distillation): float -> W1A4 -> W1A2 -> W1A1 in one command.

`beex train --stages float,a4,a2,a1 --output DIR ...` trains one ordinary run per stage in DIR/<stage>. Every
stage after the first starts from the previous stage's best weights (its activation quantizers, which have no
counterpart there or another width, are initialised again from the first batch) and is taught by it
(`distill.py`, the run's --kd-* weights); the first stage may instead be taught by a given `--teacher`, and
start from a finished run given by `--start-from` (to continue a schedule from a W1A4 run trained before). A stage
is done when DIR/<stage>/stage.json exists; `beex train --resume --output DIR` skips the done stages and resumes
an interrupted one from its own checkpoint, so a kill loses at most the steps since the last checkpoint.
DIR/stages.json lists every stage with its training minutes (wall and CPU) and dev metrics.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beexformer.accounting import bits_label
from beexformer.errors import ConfigError
from beexformer.training import checkpoint as ckpt
from beexformer.training.arguments import TrainingArguments
from beexformer.training.warm_start import finished_weights

PLAN_FILE = "staged.json"
STAGE_FILE = "stage.json"
SUMMARY_FILE = "stages.json"
FLOAT = {"weight_bits": 32, "act_bits": 32, "embedding_bits": 32, "exit_bits": 32}


def stage_overrides(name: str, base: dict[str, Any]) -> dict[str, Any]:
    """The model fields of stage `name` ("float", "a4", "a2", "a1", "a32") on top of the run's own ones:
    1-bit weights from "aK" on, activations of K bits; at one bit BiT's elastic sign unless the run chose."""
    if name == "float":
        return {**base, **FLOAT}
    if name in ("a1", "a2", "a4", "a32"):
        bits = {"weight_bits": 1, "embedding_bits": base.get("embedding_bits", 1),
                "exit_bits": base.get("exit_bits", 32), "act_bits": int(name[1:])}  # fmt: skip
        if name == "a1":
            bits["act_binarizer"] = base.get("act_binarizer", "elastic")
        return {**base, **bits}
    raise ConfigError(f"--stages: unknown stage {name!r}; use float, a4, a2, a1 (or a32) in this order")


def parse_stages(text: str) -> list[str]:
    stages = [s.strip().lower() for s in text.split(",") if s.strip()]
    order = ["float", "a32", "a4", "a2", "a1"]
    for name in stages:
        stage_overrides(name, {})
    if len(set(stages)) != len(stages) or stages != sorted(stages, key=order.index):
        raise ConfigError(f"--stages {text}: each stage once, from wide to narrow (float, a4, a2, a1)")
    if not stages:
        raise ConfigError("--stages: give at least one stage, e.g. float,a4,a2,a1")
    return stages


@dataclass
class StageResult:
    stage: str
    output: str
    teacher: str | None
    started_from: str | None
    steps: int
    minutes: float  # wall-clock training minutes (the machine is shared: see cpu_minutes)
    cpu_minutes: float  # CPU time of the training process
    best_step: int | None
    selection_metric: float | None  # what the best model was picked by (dev, or held-out when there is one)
    dev_metric_early_exit: float | None  # dev at the best step
    dev_metric_no_exit: float | None
    flops_saved: float | None

    @classmethod
    def from_summary(cls, stage: str, summary: dict[str, Any], teacher: str | None, start: str | None):
        best = next((h for h in summary["history"] if h["step"] == summary["best_step"]), {})
        return cls(
            stage=stage,
            output=summary["output"],
            teacher=teacher,
            started_from=start,
            steps=summary["steps"],
            minutes=summary["elapsed_seconds"] / 60,
            cpu_minutes=summary["cpu_seconds"] / 60,
            best_step=summary["best_step"],
            selection_metric=summary["best_metric"],
            dev_metric_early_exit=best.get("metric_early_exit"),
            dev_metric_no_exit=best.get("metric_no_exit"),
            flops_saved=best.get("flops_saved"),
        )


class StagedRun:
    def __init__(
        self, output: Path, base: TrainingArguments, stages: list[str], log=print, start: str | None = None
    ) -> None:
        self.output, self.base, self.stages, self.log = output, base, stages, log
        self.start = start  # a finished run whose weights the first stage starts from (else --init's)

    @classmethod
    def create(cls, base: TrainingArguments, stages: list[str], log=print, start: str | None = None) -> StagedRun:
        out = Path(base.output)
        if (out / PLAN_FILE).exists():
            raise ConfigError(f"{out} already holds a staged run: pass --resume to continue it")
        if start is not None:
            if stages[0] == "float":
                raise ConfigError("--start-from continues a schedule with 1-bit stages; drop the float stage")
            finished_weights(start)  # refuse before the plan is written, not when the first stage starts
            # BiT: a stage is taught by the one it starts from, unless the user names another teacher
            base = dataclasses.replace(base, teacher=base.teacher or start)
        if stages[0] != "float" and not base.teacher:
            raise ConfigError("--stages without a float stage needs --teacher (the float run that teaches the first)")
        out.mkdir(parents=True, exist_ok=True)
        plan = {"stages": stages, "arguments": base.to_dict(), "start_from": start}
        (out / PLAN_FILE).write_text(json.dumps(plan, indent=2) + "\n")
        return cls(out, base, stages, log, start)

    @classmethod
    def load(cls, output: str | Path, overrides: dict[str, Any], log=print) -> StagedRun:
        out = Path(output)
        try:
            plan = json.loads((out / PLAN_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{out}: cannot read {PLAN_FILE} ({err})") from None
        base = TrainingArguments.from_saved(plan["arguments"])
        for name in ("progress", "num_threads", "data_dir"):
            if name in overrides:
                setattr(base, name, overrides[name])
        return cls(out, base, plan["stages"], log, plan.get("start_from"))

    def stage_arguments(self, name: str, teacher: str | None, start: str | None = None) -> TrainingArguments:
        # The binarization ramp blends float weights into 1-bit: only the first 1-bit stage has float weights
        # to start from. A later stage starts from 1-bit latent weights, whose float values the previous stage
        # never used, so it is 1-bit from its first step.
        first_binary = self.start is None and self.stages.index(name) == sum(stage == "float" for stage in self.stages)
        return dataclasses.replace(
            self.base,
            output=str(self.output / name),
            model=stage_overrides(name, dict(self.base.model)),
            teacher=teacher,
            start_from=start,
            binarize_ramp=self.base.binarize_ramp if first_binary else 0.0,
        )

    def run(self) -> list[StageResult]:
        from beexformer.training.trainer import Trainer, TrainingInterrupted, resume_arguments

        results: list[StageResult] = []
        previous: Path | None = Path(self.start) if self.start else None
        teacher = self.base.teacher  # the first stage's, if any
        for name in self.stages:
            stage_dir = self.output / name
            done = stage_dir / STAGE_FILE
            if done.is_file():
                results.append(StageResult(**json.loads(done.read_text())))
                self.log(f"stage {name}: done before ({results[-1].minutes:.1f} min), skipped")
                previous, teacher = stage_dir, str(stage_dir)
                continue
            start = str(previous) if previous is not None else None
            if ckpt.latest_checkpoint(stage_dir / "checkpoints") is not None:
                keep = {k: getattr(self.base, k) for k in ("progress", "num_threads", "data_dir")}
                trainer = Trainer(resume_arguments(stage_dir, keep), resume=True, log=self.log)
            else:
                trainer = Trainer(self.stage_arguments(name, teacher, start), log=self.log)
            config = trainer.accelerator.unwrap_model(trainer.model).config
            self.log(f"stage {name}: {bits_label(config)}, teacher {trainer.args.teacher or '-'}")
            try:
                summary = trainer.train()
            except TrainingInterrupted:
                raise TrainingInterrupted(
                    f"stopped in stage {name}; continue with: beex train --resume --output {self.output}"
                ) from None
            result = StageResult.from_summary(name, summary, teacher, start)
            tmp = done.with_suffix(".tmp")
            tmp.write_text(json.dumps(dataclasses.asdict(result), indent=1) + "\n")
            tmp.replace(done)  # the stage counts as done only once this file is whole
            results.append(result)
            previous, teacher = stage_dir, str(stage_dir)
        (self.output / SUMMARY_FILE).write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1) + "\n")
        self.log(format_stages(results))
        return results


def format_stages(results: list[StageResult]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}"

    lines = [f"{'stage':<6} {'steps':>6} {'minutes':>8} {'CPU min':>8} {'dev (exit)':>10} {'dev (no exit)':>13}"]
    for r in results:
        lines.append(
            f"{r.stage:<6} {r.steps:>6} {r.minutes:>8.2f} {r.cpu_minutes:>8.2f} "
            f"{pct(r.dev_metric_early_exit):>10} {pct(r.dev_metric_no_exit):>13}"
        )
    return "\n".join(lines)
