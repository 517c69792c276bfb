"""The exit threshold chosen on the held-out slice: a bound on the drop, not the drop the slice happened to show.

Constructed two-block exit logits under the max-probability rule: samples 0-99 are confident at block 1 (so
every confidence up to 0.95 lets them leave there), the rest are not.
"""

from __future__ import annotations

import numpy as np

from beexformer.config import BEExformerConfig
from beexformer.data.glue import get_task
from beexformer.evaluation import ExitLogits, rule_result
from beexformer.exits import MaxProbability
from beexformer.training.holdout import bootstrap_rows, choose_threshold, drop_bound

CONFIG = BEExformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_blocks=2, exit_hidden=4, n_classes=2)
SST2 = get_task("sst2")
N = 200


def _onehot(classes: np.ndarray, margin: float) -> np.ndarray:
    out = np.zeros((len(classes), 2), dtype=np.float32)
    out[np.arange(len(classes)), classes] = margin
    return out


def _data(first_answers: np.ndarray, last_answers: np.ndarray, labels: np.ndarray) -> ExitLogits:
    first = _onehot(first_answers, 3.5)  # softmax 0.97: leaves at block 1 for confidence <= 0.95
    first[100:] = 0.0  # softmax 0.5 (class 0): stays for confidence > 0.5
    return ExitLogits(np.stack([first, _onehot(last_answers, 5.0)], axis=1), np.full(N, 8), labels)


def _noisy_but_free_on_average() -> ExitLogits:
    # Of the 100 confident samples, early exit turns 50 right answers wrong and 50 wrong answers right.
    labels = np.zeros(N, dtype=np.int64)
    labels[:100] = 1
    last = labels.copy()
    last[50:100] = 0  # the last block is wrong on 50..99
    first = labels.copy()
    first[:50] = 0  # block 1 is wrong on 0..49, right on 50..99
    return _data(first, last, labels)


def test_a_rule_that_is_free_only_on_average_is_not_chosen():
    data = _noisy_but_free_on_average()
    no_exit = rule_result(SST2, CONFIG, data, MaxProbability(0.99)).metric
    assert rule_result(SST2, CONFIG, data, MaxProbability(0.9)).metric == no_exit  # the point estimate: free
    choice = choose_threshold(SST2, CONFIG, data, "max_prob")
    assert choice.rule.confidence == 0.99 and choice.flops_saved == 0.0 and choice.drop_bound == 0.0


def test_a_rule_that_changes_no_answer_is_chosen_for_its_savings():
    labels = np.zeros(N, dtype=np.int64)
    labels[:100] = 1
    choice = choose_threshold(SST2, CONFIG, _data(labels, labels, labels), "max_prob")
    assert choice.rule.confidence == 0.5 and choice.flops_saved > 0.4 and choice.drop_bound == 0.0


def test_drop_bound_is_zero_without_change_and_above_a_certain_drop():
    labels = np.zeros(N, dtype=np.int64)
    last = labels.copy()
    exited = labels.copy()
    exited[:20] = 1  # early exit turns 20 right answers wrong: a drop of 0.1 on every resample that has them
    rows = bootstrap_rows(N)
    assert drop_bound(SST2, last, last, labels, rows) == 0.0
    bound = drop_bound(SST2, last, exited, labels, rows)
    median = drop_bound(SST2, last, exited, labels, rows, confidence=0.5)
    assert 0.09 <= median <= 0.11 and median < bound < 0.2
