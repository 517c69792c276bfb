"""A held-out slice of the training set, for the choices that must not look at the reported dev set: which
checkpoint is the best one, and the exit threshold stored with the model.

The threshold: the configured exit rule at every threshold of its sweep grid (`exits.SWEEP_GRIDS`), run on the
held-out exit logits; the one that saves the most FLOPs while its held-out metric stays within
`TOLERANCE` of the metric without early exit (of equal savings, the first in the grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from beexformer.evaluation import ExitLogits, rule_result
from beexformer.exits import SWEEP_GRIDS, ExitRule, build_exit_rule

TOLERANCE = 0.005  # metric points (as a fraction) early exit may cost on the held-out slice


def split_holdout(n: int, fraction: float, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of n examples: a seeded random `fraction` (at most `cap`, at least
    one example when fraction > 0) is held out; both index lists are sorted (the order of the file)."""
    if fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    size = min(cap, max(1, round(fraction * n)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[size:]), np.sort(order[:size])


@dataclass
class ThresholdChoice:
    rule: ExitRule  # the rule with the chosen threshold
    metric_no_exit: float  # held-out metric of the last exit
    metric_early_exit: float  # held-out metric with the chosen rule
    flops_saved: float  # held-out share of FLOPs saved with the chosen rule


def choose_threshold(task, config, data: ExitLogits, rule_name: str, tolerance: float = TOLERANCE) -> ThresholdChoice:
    """The threshold of `rule_name` that saves most FLOPs on held-out `data` within `tolerance` of no exit
    (if none stays within it: the one with the best held-out metric)."""
    from beexformer.data.metrics import compute_metrics

    if data.labels is None:
        raise ValueError("choose_threshold needs labelled held-out data")
    no_exit = compute_metrics(task, data.logits[:, -1], data.labels)["main"]
    candidates = []
    for threshold in SWEEP_GRIDS[rule_name]:
        rule = build_exit_rule(rule_name, threshold)
        result = rule_result(task, config, data, rule)
        candidates.append(ThresholdChoice(rule, no_exit, result.metric, result.flops_saved))
    within = [c for c in candidates if c.metric_early_exit >= no_exit - tolerance]
    if within:
        return max(within, key=lambda c: c.flops_saved)  # max() keeps the first of equals: grid order
    return max(candidates, key=lambda c: c.metric_early_exit)
