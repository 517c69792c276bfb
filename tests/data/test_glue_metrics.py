"""GLUE metrics on hand-computed values and against textbook formulas written independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from beexformer.data.glue import TASKS
from beexformer.data.metrics import (
    accuracy,
    compute_metrics,
    f1,
    matthews_corrcoef,
    pearson,
    rankdata,
    spearman,
)

# preds/labels with TP=2, TN=1, FP=1, FN=1.
P = [1, 1, 0, 1, 0]
Y = [1, 0, 0, 1, 1]


def test_accuracy_known() -> None:
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(P, Y) == pytest.approx(3 / 5)


def test_f1_known() -> None:
    # 2TP / (2TP + FP + FN) = 4 / 6; also precision 2/3, recall 2/3.
    assert f1(P, Y) == pytest.approx(2 / 3)
    assert f1([1, 0, 0, 0], [1, 1, 1, 1]) == pytest.approx(2 * 1 / (2 * 1 + 0 + 3))


def test_mcc_binary_known() -> None:
    # (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3 * 3 * 2 * 2) = 1/6
    assert matthews_corrcoef(P, Y) == pytest.approx(1 / 6)
    assert matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)


def test_mcc_multiclass_known() -> None:
    # Gorodkin: (c s - t.q) / sqrt((s^2 - q.q)(s^2 - t.t)) with c=5, s=6, t=(2,2,2), q=(2,3,1)
    y = [0, 1, 2, 0, 1, 2]
    p = [0, 1, 1, 0, 1, 2]
    assert matthews_corrcoef(p, y) == pytest.approx(18 / math.sqrt(22 * 24))


def _mcc_binary_formula(p: np.ndarray, y: np.ndarray) -> float:
    tp = float(np.sum((p == 1) & (y == 1)))
    tn = float(np.sum((p == 0) & (y == 0)))
    fp = float(np.sum((p == 1) & (y == 0)))
    fn = float(np.sum((p == 0) & (y == 1)))
    return (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


def _mcc_onehot_reference(p: np.ndarray, y: np.ndarray, k: int) -> float:
    # MCC as the correlation of one-hot indicator matrices: sum_k cov(Y_k, P_k) / sqrt(...).
    Yh, Ph = np.eye(k)[y], np.eye(k)[p]
    Yc, Pc = Yh - Yh.mean(0), Ph - Ph.mean(0)
    return float((Yc * Pc).sum() / math.sqrt((Yc * Yc).sum() * (Pc * Pc).sum()))


def test_mcc_against_formulas_on_random_data() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, size=50)
        p = np.where(rng.random(50) < 0.7, y, 1 - y)
        assert matthews_corrcoef(p, y) == pytest.approx(_mcc_binary_formula(p, y))
        y3 = rng.integers(0, 3, size=60)
        p3 = np.where(rng.random(60) < 0.6, y3, rng.integers(0, 3, size=60))
        assert matthews_corrcoef(p3, y3) == pytest.approx(_mcc_onehot_reference(p3, y3, 3))


def test_pearson_known() -> None:
    # dx = (-2,-1,0,1,2), dy = (-2,0,1,0,1): 6 / sqrt(10 * 6)
    assert pearson([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]) == pytest.approx(6 / math.sqrt(60))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_pearson_against_corrcoef() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = 0.5 * x + rng.normal(size=200)
    assert pearson(x, y) == pytest.approx(float(np.corrcoef(x, y)[0, 1]))


def test_rankdata_ties_average() -> None:
    np.testing.assert_allclose(rankdata([3, 1, 4, 1, 5]), [3, 1.5, 4, 1.5, 5])
    np.testing.assert_allclose(rankdata([2, 2, 2]), [2, 2, 2])
    np.testing.assert_allclose(rankdata([0.5, -1.0, 0.5, 0.5, 7.0]), [3, 1, 3, 3, 5])


def test_spearman_known_with_ties() -> None:
    # ranks y = (1, 2.5, 4.5, 2.5, 4.5): 7 / sqrt(10 * 9)
    assert spearman([1, 2, 3, 4, 5], [2, 4, 5, 4, 5]) == pytest.approx(7 / math.sqrt(90))
    # Without ties: 1 - 6 sum d^2 / (n (n^2 - 1)); d = (0, 1, -1, 0) -> 1 - 12/60 = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # Monotone but non-linear: Spearman 1, Pearson < 1.
    x = np.arange(1.0, 11.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert pearson(x, x**3) < 0.99


def test_spearman_against_naive_ranks() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 6, size=40).astype(float)  # many ties
    y = x + rng.integers(0, 3, size=40)

    def naive_rank(v: np.ndarray) -> np.ndarray:
        # Rank of each value = (number below) + (number equal + 1) / 2
        return np.array([np.sum(v < a) + (np.sum(v == a) + 1) / 2 for a in v])

    rx, ry = naive_rank(x), naive_rank(y)
    assert spearman(x, y) == pytest.approx(float(np.corrcoef(rx, ry)[0, 1]))


def test_degenerate_inputs_give_zero_not_nan() -> None:
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0
    assert matthews_corrcoef([0, 0, 0], [0, 0, 0]) == 0.0
    assert pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert spearman([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0
    assert f1([0, 0, 0], [1, 0, 1]) == 0.0


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([1, 0], [1])
    with pytest.raises(ValueError, match="zero examples"):
        f1([], [])


def test_compute_metrics_per_task() -> None:
    mrpc = compute_metrics(TASKS["mrpc"], np.array(P), np.array(Y))
    assert set(mrpc) == {"f1", "accuracy", "main"}
    assert mrpc["main"] == mrpc["f1"] == pytest.approx(2 / 3)
    assert mrpc["accuracy"] == pytest.approx(0.6)

    cola = compute_metrics(TASKS["cola"], P, Y)
    assert cola == {"matthews": pytest.approx(1 / 6), "main": pytest.approx(1 / 6)}

    # Logits [N, C] are turned into class indices.
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    mnli = compute_metrics(TASKS["mnli"], logits, [0, 1, 2, 1])
    assert mnli == {"accuracy": 0.75, "main": 0.75}

    scores = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])  # regression head output [N, 1]
    stsb = compute_metrics(TASKS["stsb"], scores, [2.0, 4.0, 5.0, 4.0, 5.0])
    assert stsb["pearson"] == pytest.approx(6 / math.sqrt(60))
    assert stsb["spearman"] == pytest.approx(7 / math.sqrt(90))
    assert stsb["main"] == stsb["pearson"]


def test_every_task_has_computable_metrics() -> None:
    for task in TASKS.values():
        y = [0.0, 1.0, 2.5, 5.0] if task.is_regression else [0, 1, 1, 0]
        out = compute_metrics(task, y, y)
        assert set(out) == {*task.metric_names, "main"}
        assert out["main"] == pytest.approx(1.0)
        assert all(isinstance(v, float) for v in out.values())
