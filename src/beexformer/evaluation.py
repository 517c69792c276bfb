"""Dev-set evaluation: run every exit once, then judge any exit rule on the stored logits.

Running all C exits once and applying a rule offline (`ExitRule.decide`) gives exactly the decisions of
block-by-block early-exit inference (a rule only ever looks at blocks <= c; tests/core check the two agree),
and lets a threshold sweep reuse one forward pass. The compute actually skipped is measured separately by
the latency benchmark.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from beexformer.accounting import FileSizes, expected_cost
from beexformer.config import BEExformerConfig
from beexformer.exits import ExitRule, NeverExit, predictions_from_logits


@dataclass
class ExitLogits:
    logits: np.ndarray  # [N, C, K]: every exit's logits for every sample
    lengths: np.ndarray  # [N]: real tokens per sample (for the FLOPs of each sample)
    labels: np.ndarray | None  # [N] or None for unlabeled data


def collect_exit_logits(model, loader, progress: bool = False) -> ExitLogits:
    """Forward a (torch) DataLoader of collated batches through all blocks, in eval mode."""
    import torch
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    logits, lengths, labels = [], [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            logits.append(out.exit_logits.float().cpu().numpy().transpose(1, 0, 2))
            lengths.append(batch["attention_mask"].sum(dim=1).cpu().numpy())
            if "labels" in batch:
                labels.append(batch["labels"].cpu().numpy())
    return ExitLogits(np.concatenate(logits), np.concatenate(lengths), np.concatenate(labels) if labels else None)


@dataclass(frozen=True)
class RuleResult:
    """One exit rule judged on stored exit logits."""

    exit_rule: str  # the rule's name
    threshold: float | None  # its knob (None for no exit)
    exit_histogram: list[int]  # samples leaving at block 1..C
    mean_exit_block: float
    flops_saved: float  # fraction of the no-exit FLOPs
    flops_per_sample_early_exit: float
    agreement_with_last_exit: float  # share of samples whose answer equals the last exit's
    metrics: dict[str, float] | None  # the task's metrics with this rule; None on unlabelled data

    @property
    def metric(self) -> float | None:
        """The task's main metric with this rule."""
        return None if self.metrics is None else self.metrics["main"]


def rule_result(task, config: BEExformerConfig, data: ExitLogits, rule: ExitRule) -> RuleResult:
    """Metric, exit histogram, mean exit block and FLOPs saved of one rule on stored exit logits."""
    from beexformer.data.metrics import compute_metrics

    decision = rule.decide(data.logits)
    cost = expected_cost(config, decision.exit_block, data.lengths)
    same = np.isclose(decision.predictions, predictions_from_logits(data.logits[:, -1]))
    return RuleResult(
        exit_rule=rule.name,
        threshold=None if isinstance(rule, NeverExit) else getattr(rule, rule.threshold_name, None),
        exit_histogram=cost.histogram,
        mean_exit_block=cost.mean_exit_block,
        flops_saved=cost.saved,
        flops_per_sample_early_exit=cost.flops_early_exit / max(len(data.lengths), 1),
        agreement_with_last_exit=float(same.mean()) if len(same) else float("nan"),
        metrics=None if data.labels is None else compute_metrics(task, decision.predictions, data.labels),
    )


@dataclass(frozen=True)
class SweepRow:
    """One (rule, threshold) point of a sweep: `beex sweep` writes these as sweep.csv."""

    rule: str
    threshold: float | None
    metric: float | None
    flops_saved: float
    mean_exit_block: float
    agreement_with_last_exit: float
    exit_histogram: str  # counts per block, space-separated (one CSV cell)


def sweep_rows(task, config: BEExformerConfig, data: ExitLogits, rules: list[str]) -> list[SweepRow]:
    """One row per (rule, threshold) of `exits.SWEEP_GRIDS`, plus the no-exit baseline, on stored logits
    (`beex sweep` and the reproduction report)."""
    from beexformer.exits import SWEEP_GRIDS, build_exit_rule

    rows = []
    for rule in [NeverExit()] + [build_exit_rule(r, t) for r in rules for t in SWEEP_GRIDS[r]]:
        r = rule_result(task, config, data, rule)
        hist = " ".join(map(str, r.exit_histogram))
        rows.append(SweepRow(rule.name, r.threshold, r.metric, r.flops_saved, r.mean_exit_block,
                             r.agreement_with_last_exit, hist))  # fmt: skip
    return rows


@dataclass(frozen=True)
class EvaluationReport:
    """Everything `beex eval` prints and writes (`to_dict` is its JSON); the label fields are None on
    unlabelled data."""

    task: str
    metric: str  # name of the task's main metric
    n_samples: int
    exit_rule: str  # the rule with its threshold, e.g. "fractional_entropy(delta=0.05)"
    exit_histogram: list[int]
    mean_exit_block: float
    flops_saved: float
    agreement_with_last_exit: float
    metric_early_exit: float | None = None
    metric_no_exit: float | None = None
    metrics_early_exit: dict[str, float] | None = None
    metrics_no_exit: dict[str, float] | None = None
    metric_per_exit: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def evaluation_report(task, config: BEExformerConfig, data: ExitLogits, rule: ExitRule) -> EvaluationReport:
    """Metric with and without early exit, per-exit metrics, the exit histogram, mean exit block and FLOPs
    saved of `rule` on stored exit logits."""
    from beexformer.data.metrics import compute_metrics

    with_exit = rule_result(task, config, data, rule)
    labelled: dict[str, Any] = {}
    if data.labels is not None:
        no_exit = compute_metrics(task, data.logits[:, -1], data.labels)
        labelled = {
            "metric_early_exit": with_exit.metric,
            "metric_no_exit": no_exit["main"],
            "metrics_early_exit": with_exit.metrics,
            "metrics_no_exit": no_exit,
            "metric_per_exit": [
                compute_metrics(task, data.logits[:, c], data.labels)["main"] for c in range(data.logits.shape[1])
            ],
        }
    return EvaluationReport(
        task=task.name,
        metric=task.main_metric,
        n_samples=int(len(data.lengths)),
        exit_rule=rule.describe(),
        exit_histogram=with_exit.exit_histogram,
        mean_exit_block=with_exit.mean_exit_block,
        flops_saved=with_exit.flops_saved,
        agreement_with_last_exit=with_exit.agreement_with_last_exit,
        **labelled,
    )


def format_report(report: EvaluationReport, size: FileSizes | str | None = None) -> str:
    """A few human-readable lines of an evaluation report; `size` is the model's file sizes, or why they
    were not measured."""
    lines = [f"task {report.task}: {report.n_samples} samples, exit rule {report.exit_rule}"]
    if report.metric_early_exit is not None:
        m = report.metric
        lines.append(
            f"  {m} with early exit: {100 * report.metric_early_exit:.2f}   without: {100 * report.metric_no_exit:.2f}"
        )
        per_exit = "  ".join(f"{100 * v:.1f}" for v in report.metric_per_exit or [])
        lines.append(f"  {m} at each exit: {per_exit}")
    total = max(sum(report.exit_histogram), 1)
    lines.append("  exit block histogram:")
    for c, n in enumerate(report.exit_histogram, start=1):
        lines.append(f"    block {c}: {n:>6} {'#' * round(40 * n / total)}")
    lines.append(
        f"  mean exit block {report.mean_exit_block:.2f}   FLOPs saved {100 * report.flops_saved:.1f} %   "
        f"agreement with last exit {100 * report.agreement_with_last_exit:.1f} %"
    )
    if isinstance(size, str):
        lines.append(f"  size ratio not measured: {size}")
    elif size is not None:
        lines.append(
            f"  size ratio {size.size_ratio:.2f}x: float32 checkpoint {size.float32_checkpoint_bytes / 1e6:.2f} MB"
            f" / packed file {size.packed_file_bytes / 1e6:.3f} MB"
        )
    return "\n".join(lines)
