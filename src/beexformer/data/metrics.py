"""GLUE metrics in plain numpy (no scipy, sklearn or torch).

All metrics are returned as fractions (accuracy 0..1, F1 0..1, correlations -1..1), never as percentages;
multiply by 100 for the usual GLUE tables.

Degenerate inputs give 0.0 rather than NaN where the metric is undefined: Matthews correlation and
Pearson/Spearman with a constant prediction (or constant labels), and F1 with no positive prediction and no
positive label. This matches scikit-learn for MCC and F1, and keeps early-stopping logic free of NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from beexformer.data.glue import GlueTask

__all__ = ["accuracy", "f1", "matthews_corrcoef", "pearson", "spearman", "rankdata", "compute_metrics"]


def _pair(predictions: ArrayLike, labels: ArrayLike, dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions).reshape(-1).astype(dtype)
    y = np.asarray(labels).reshape(-1).astype(dtype)
    if p.shape != y.shape:
        raise ValueError(f"predictions and labels differ in length: {p.size} vs {y.size}")
    if p.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return p, y


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of predictions equal to the labels."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Binary F1 of the positive class 1: 2 TP / (2 TP + FP + FN); 0.0 when that is 0/0."""
    p, y = _pair(predictions, labels)
    tp = int(np.sum((p == 1) & (y == 1)))
    fp = int(np.sum((p == 1) & (y != 1)))
    fn = int(np.sum((p != 1) & (y == 1)))
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2 * tp / denom


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation coefficient, multi-class form (Gorodkin's R_K); 0.0 when undefined.

    For two classes it equals (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    """
    p, y = _pair(predictions, labels)
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = classes.size
    yi, pi = inverse[: y.size], inverse[y.size :]
    conf = np.zeros((k, k), dtype=np.float64)  # rows: true class, columns: predicted class
    np.add.at(conf, (yi, pi), 1.0)
    t = conf.sum(axis=1)  # times each class truly occurs
    q = conf.sum(axis=0)  # times each class was predicted
    c = np.trace(conf)
    s = conf.sum()
    cov_yp = c * s - float(t @ q)
    cov_pp = s * s - float(q @ q)
    cov_yy = s * s - float(t @ t)
    denom = cov_pp * cov_yy
    # A constant prediction (or constant labels) makes the denominator 0: the correlation is undefined.
    return 0.0 if denom == 0 else float(cov_yp / np.sqrt(denom))


def pearson(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Pearson correlation coefficient; 0.0 when either side is constant."""
    p, y = _pair(predictions, labels, np.float64)
    pc = p - p.mean()
    yc = y - y.mean()
    denom = float(np.sqrt(np.dot(pc, pc) * np.dot(yc, yc)))
    if denom == 0.0:
        return 0.0
    # Clip: rounding can push a perfect correlation slightly past 1.
    return float(np.clip(np.dot(pc, yc) / denom, -1.0, 1.0))


def rankdata(values: ArrayLike) -> np.ndarray:
    """Ranks 1..n with ties given the mean of the ranks they span (scipy's ``method="average"``)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]  # exclusive
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def spearman(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Spearman rank correlation: Pearson on tie-averaged ranks; 0.0 when either side is constant."""
    p, y = _pair(predictions, labels, np.float64)
    return pearson(rankdata(p), rankdata(y))


_METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def main_metric(task: GlueTask, predictions: ArrayLike, labels: ArrayLike) -> float:
    """The task's main metric alone (as `compute_metrics(...)["main"]`, without computing the others)."""
    return compute_metrics(task, predictions, labels, names=(task.main_metric,))["main"]


def compute_metrics(
    task: GlueTask, predictions: ArrayLike, labels: ArrayLike, names: tuple[str, ...] = ()
) -> dict[str, float]:
    """The task's official metrics (docs/design.md section 7) as fractions, plus ``"main"``.

    Args:
        task: the GLUE task (its ``metric_names`` and ``main_metric`` are used).
        predictions: class indices [N], or scores/logits [N, C] (argmax is taken); for the regression task
            STS-B, scores [N] or [N, 1].
        labels: gold class indices [N] (floats for STS-B).
        names: compute only these metrics (default: all of the task's); the main one must be among them.

    Returns:
        e.g. ``{"f1": 0.88, "accuracy": 0.84, "main": 0.88}`` for MRPC.
    """
    pred = np.asarray(predictions)
    if task.is_regression:
        pred = pred.reshape(pred.shape[0], -1)[:, 0] if pred.ndim > 1 else pred
    elif pred.ndim == 2:
        pred = pred.argmax(axis=-1)
    elif pred.ndim != 1:
        raise ValueError(f"predictions must be [N] or [N, C], got shape {pred.shape}")
    out = {name: _METRICS[name](pred, labels) for name in names or task.metric_names}
    out["main"] = out[task.main_metric]
    return out
