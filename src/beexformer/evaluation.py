"""Dev-set evaluation: run every exit once, then judge any exit rule on the stored logits.

Running all C exits once and applying a rule offline (`ExitRule.decide`) gives exactly the decisions of
block-by-block early-exit inference (a rule only ever looks at blocks <= c; tests/core check the two agree),
and lets a threshold sweep reuse one forward pass. The compute actually skipped is measured separately by
the latency benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from beexformer.accounting import expected_cost
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


def rule_result(task, config: BEExformerConfig, data: ExitLogits, rule: ExitRule) -> dict[str, Any]:
    """Metric, exit histogram, mean exit block and FLOPs saved of one rule on stored exit logits."""
    from beexformer.data.metrics import compute_metrics

    decision = rule.decide(data.logits)
    cost = expected_cost(config, decision.exit_block, data.lengths)
    result: dict[str, Any] = {
        "exit_rule": rule.name,
        "threshold": getattr(rule, rule.threshold_name, None) if not isinstance(rule, NeverExit) else None,
        "exit_histogram": cost.histogram,
        "mean_exit_block": cost.mean_exit_block,
        "flops_saved": cost.saved,
        "flops_per_sample_early_exit": cost.flops_early_exit / max(len(data.lengths), 1),
    }
    if data.labels is not None:
        result["metrics"] = compute_metrics(task, decision.predictions, data.labels)
    same = np.isclose(decision.predictions, predictions_from_logits(data.logits[:, -1]))
    result["agreement_with_last_exit"] = float(same.mean()) if len(same) else float("nan")
    return result


def sweep_rows(task, config: BEExformerConfig, data: ExitLogits, rules: list[str]) -> list[dict[str, Any]]:
    """One row per (rule, threshold) of `exits.SWEEP_GRIDS`, plus the no-exit baseline, on stored logits
    (`beex sweep` and the reproduction report)."""
    from beexformer.exits import SWEEP_GRIDS, build_exit_rule

    rows = []
    for rule in [NeverExit()] + [build_exit_rule(r, t) for r in rules for t in SWEEP_GRIDS[r]]:
        result = rule_result(task, config, data, rule)
        rows.append(
            {
                "rule": rule.name,
                "threshold": result["threshold"],
                "metric": result["metrics"]["main"] if "metrics" in result else None,
                "flops_saved": result["flops_saved"],
                "mean_exit_block": result["mean_exit_block"],
                "agreement_with_last_exit": result["agreement_with_last_exit"],
                "exit_histogram": " ".join(map(str, result["exit_histogram"])),
            }
        )
    return rows


def evaluation_report(task, config: BEExformerConfig, data: ExitLogits, rule: ExitRule) -> dict[str, Any]:
    """Everything `beex eval` prints and writes: metric with and without early exit, per-exit metrics,
    the exit histogram, mean exit block and FLOPs saved."""
    from beexformer.data.metrics import compute_metrics

    with_exit = rule_result(task, config, data, rule)
    report: dict[str, Any] = {
        "task": task.name,
        "metric": task.main_metric,
        "n_samples": int(len(data.lengths)),
        "exit_rule": rule.describe(),
        "exit_histogram": with_exit["exit_histogram"],
        "mean_exit_block": with_exit["mean_exit_block"],
        "flops_saved": with_exit["flops_saved"],
        "agreement_with_last_exit": with_exit["agreement_with_last_exit"],
    }
    if data.labels is not None:
        no_exit = compute_metrics(task, data.logits[:, -1], data.labels)
        report["metric_early_exit"] = with_exit["metrics"]["main"]
        report["metric_no_exit"] = no_exit["main"]
        report["metrics_early_exit"] = with_exit["metrics"]
        report["metrics_no_exit"] = no_exit
        report["metric_per_exit"] = [
            compute_metrics(task, data.logits[:, c], data.labels)["main"] for c in range(data.logits.shape[1])
        ]
    return report


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines of an evaluation report."""
    lines = [f"task {report['task']}: {report['n_samples']} samples, exit rule {report['exit_rule']}"]
    if "metric_early_exit" in report:
        m = report["metric"]
        lines.append(
            f"  {m} with early exit: {100 * report['metric_early_exit']:.2f}   "
            f"without: {100 * report['metric_no_exit']:.2f}"
        )
        per_exit = "  ".join(f"{100 * v:.1f}" for v in report["metric_per_exit"])
        lines.append(f"  {m} at each exit: {per_exit}")
    hist = report["exit_histogram"]
    total = max(sum(hist), 1)
    lines.append("  exit block histogram:")
    for c, n in enumerate(hist, start=1):
        lines.append(f"    block {c}: {n:>6} {'#' * round(40 * n / total)}")
    lines.append(
        f"  mean exit block {report['mean_exit_block']:.2f}   "
        f"FLOPs saved {100 * report['flops_saved']:.1f} %   "
        f"agreement with last exit {100 * report['agreement_with_last_exit']:.1f} %"
    )
    if "size" in report and "not_measured" in report["size"]:
        lines.append(f"  size ratio not measured: {report['size']['not_measured']}")
    elif "size" in report:
        s = report["size"]
        lines.append(
            f"  size ratio {s['size_ratio']:.2f}x: float32 checkpoint {s['float32_checkpoint_bytes'] / 1e6:.2f} MB"
            f" / packed file {s['packed_file_bytes'] / 1e6:.3f} MB"
        )
    return "\n".join(lines)
