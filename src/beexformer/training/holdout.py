"""A held-out slice of the training set, for the choices that must not look at the reported dev set: which
checkpoint is the best one, and the exit threshold stored with the model.

The threshold: the configured exit rule at every threshold of its sweep grid (`exits.SWEEP_GRIDS`), run on the
held-out exit logits; the one that saves the most FLOPs while the metric it may cost stays within `TOLERANCE`
(of equal savings, the first in the grid). "May cost" is not the drop measured on the slice but a bound on it:
the `CONFIDENCE` quantile of the drop over paired bootstrap resamples of the slice. The point estimate alone
overfits the slice's noise: a rule that changes many of 855 CoLA answers can look free there and cost 4 MCC
points on dev (measured: docs/training.md). A rule that changes few answers gets a tight bound and still
passes, so the bound costs FLOPs only where the slice cannot vouch for the rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from beexformer.errors import ConfigError
from beexformer.evaluation import ExitLogits, rule_result
from beexformer.exits import SWEEP_GRIDS, ExitRule, build_exit_rule, predictions_from_logits

if TYPE_CHECKING:
    from beexformer.data.glue import Example

TOLERANCE = 0.005  # metric points (as a fraction) early exit may cost on the held-out slice
CONFIDENCE = 0.9  # the quantile of the resampled drop that must stay within TOLERANCE
RESAMPLES = 200  # paired bootstrap resamples of the held-out slice (seeded: the choice is reproducible)


def split_holdout(n: int, fraction: float, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of n examples: a seeded random `fraction` (at most `cap`, at least
    one example when fraction > 0) is held out; both index lists are sorted (the order of the file)."""
    if fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    size = min(cap, max(1, round(fraction * n)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[size:]), np.sort(order[:size])


HOLDOUT_BY = ("example", "sentence")


def split_training_set(
    examples: list[Example], fraction: float, by: str, cap: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of `examples`: by "example" (`split_holdout`) or by "sentence"
    (`split_by_sentence`, on single-sentence tasks)."""
    if by == "sentence":
        if any(ex.text_b is not None for ex in examples):
            raise ConfigError("holdout_by='sentence' splits single-sentence tasks only (this task has pairs)")
        return split_by_sentence([ex.text_a for ex in examples], fraction, cap, seed)
    return split_holdout(len(examples), fraction, cap, seed)


def split_by_sentence(texts: list[str], fraction: float, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of phrase-level data, where the training set holds every phrase of each
    sentence's parse tree (SST-2). A random example split would hold out phrases whose text the model trains on
    inside a longer phrase (90 % of SST-2's: benchmarks/sst2_phrase_overlap.py), and the slice would run 5-6
    points above dev. Here the held-out slice is, like dev, whole sentences never seen in part: a seeded random
    `fraction` (at most `cap`) of the sentences (texts inside no other text, words matched whole), and training
    drops every text inside a held-out sentence."""
    if fraction <= 0 or len(texts) < 2:
        return np.arange(len(texts)), np.arange(0)
    padded = [f" {' '.join(t.split())} " for t in texts]  # spaces at both ends: a match covers whole words
    sentences = _sentences(padded)
    size = min(cap, max(1, round(fraction * len(sentences))), len(sentences) - 1)
    held = np.sort(np.random.default_rng(seed).permutation(sentences)[:size]) if size > 0 else np.arange(0)
    held_text = "\n".join(padded[i] for i in held)  # a padded text never spans the newline between two
    keep = [i for i in range(len(texts)) if padded[i] not in held_text]
    return np.asarray(keep, dtype=np.int64), held.astype(np.int64)


def _sentences(padded: list[str]) -> list[int]:
    """Ids of the texts inside no longer text (of equal texts, the first counts as the sentence). Candidate
    containers of a text are the texts holding all its words, narrowed from its rarest word on."""
    index: dict[str, set[int]] = defaultdict(set)  # word -> ids of the texts that hold it
    for j, text in enumerate(padded):
        for word in text.split():
            index[word].add(j)
    found = []
    for i, text in enumerate(padded):
        words = sorted(set(text.split()), key=lambda w: len(index[w]))
        if not words:
            continue
        candidates = set(index[words[0]])
        for word in words[1:]:
            if len(candidates) < 8:
                break
            candidates &= index[word]
        n = len(text)
        if not any(j != i and (len(padded[j]) > n or (len(padded[j]) == n and j < i)) and text in padded[j]
                   for j in candidates):  # fmt: skip
            found.append(i)
    return found


@dataclass
class ThresholdChoice:
    rule: ExitRule  # the rule with the chosen threshold
    metric_no_exit: float  # held-out metric of the last exit
    metric_early_exit: float  # held-out metric with the chosen rule
    flops_saved: float  # held-out share of FLOPs saved with the chosen rule
    drop_bound: float = 0.0  # the CONFIDENCE quantile of the resampled drop (0 when no answer changes)


def drop_bound(task, last, exited, labels, resamples: np.ndarray, confidence: float | None = CONFIDENCE) -> float:
    """The `confidence` quantile of metric(last) - metric(exited) over the rows of `resamples` (index arrays
    into the slice, the same rows for both sides: the drop is paired, so answers that early exit leaves alone
    add no noise). 0 when early exit changes no answer. `confidence=None`: the drop on the slice itself, the
    choice before the bound (benchmarks/threshold_choice.py compares the two)."""
    from beexformer.data.metrics import main_metric

    if np.array_equal(last, exited):
        return 0.0
    if confidence is None:
        return main_metric(task, last, labels) - main_metric(task, exited, labels)
    drops = [main_metric(task, last[i], labels[i]) - main_metric(task, exited[i], labels[i]) for i in resamples]
    return float(np.quantile(drops, confidence))


def bootstrap_rows(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """[resamples, n] indices drawn with replacement from range(n)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def choose_threshold(
    task,
    config,
    data: ExitLogits,
    rule_name: str,
    tolerance: float = TOLERANCE,
    confidence: float | None = CONFIDENCE,
) -> ThresholdChoice:
    """The threshold of `rule_name` that saves most FLOPs on held-out `data` while the `confidence` bound on
    its drop from no exit stays within `tolerance` (confidence 0.5 is close to the point estimate); if none
    does: the one with the smallest bound."""
    from beexformer.data.metrics import main_metric

    if data.labels is None:
        raise ValueError("choose_threshold needs labelled held-out data")
    last = predictions_from_logits(data.logits[:, -1])
    no_exit = main_metric(task, last, data.labels)
    rows = bootstrap_rows(len(data.labels))
    candidates = []
    for threshold in SWEEP_GRIDS[rule_name]:
        rule = build_exit_rule(rule_name, threshold)
        result = rule_result(task, config, data, rule)
        exited = rule.decide(data.logits).predictions
        bound = drop_bound(task, last, exited, data.labels, rows, confidence)
        candidates.append(ThresholdChoice(rule, no_exit, result.metric, result.flops_saved, bound))
    within = [c for c in candidates if c.drop_bound <= tolerance]
    if within:
        return max(within, key=lambda c: c.flops_saved)  # max() keeps the first of equals: grid order
    return min(candidates, key=lambda c: c.drop_bound)  # min() keeps the first of equals: grid order
