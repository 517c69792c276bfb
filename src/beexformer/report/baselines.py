"""The two bars every GLUE result of the report is set against: a trivial answer and a TF-IDF linear model.

- Trivial: the best *constant* answer on the dev set, i.e. the majority class for accuracy, "always positive"
  for F1 (MRPC), and 0 for Matthews correlation (CoLA) and Pearson (STS-B), which a constant cannot move.
  It is read off the dev labels on purpose: it is the highest score any constant reaches, so a model that
  beats it has learned something from the text (a train-majority constant can be lower, e.g. on WNLI).
- TF-IDF: word unigrams and bigrams, a logistic regression (ridge regression for STS-B). Its one
  hyper-parameter (C, or ridge's alpha) is chosen on a held-out slice of the training set, never on dev;
  the chosen value is then refit on the whole training set and scored once on dev. Sentence pairs are
  represented by the vectors of both sides, their element-wise product (the words and bigrams they share)
  and their cosine similarity, so that the pair tasks see overlap and not only a bag of both sentences.

scikit-learn is a benchmark-only dependency (the `bench` extra); nothing else in the package imports it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beexformer.data.glue import Example, GlueTask
from beexformer.data.metrics import compute_metrics
from beexformer.errors import BeexError
from beexformer.training.holdout import split_holdout

# Grids fixed before looking at any result; C and alpha are inverse and direct regularisation strengths.
C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
ALPHA_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
HELD_OUT_FRACTION = 0.1
SPLIT_SEED = 0


@dataclass(frozen=True)
class TrivialBaseline:
    """The best constant answer on dev and its main metric (a fraction)."""

    task: str
    metric_name: str
    value: float
    answer: str  # what the constant is, e.g. "majority class 'not_entailment'"
    n_dev: int


@dataclass(frozen=True)
class TfidfBaseline:
    """A TF-IDF word+bigram linear model; its hyper-parameter chosen on a held-out slice of train."""

    task: str
    metric_name: str
    value: float  # dev main metric of the model refit on all of train with the chosen value
    model: str  # "logistic regression" or "ridge regression"
    parameter: str  # "C" or "alpha"
    chosen: float
    held_out_scores: dict[str, float]  # main metric on the held-out slice, per grid value (as a string)
    n_train: int
    n_held_out: int
    n_dev: int
    seconds: float


@dataclass(frozen=True)
class TaskBaselines:
    trivial: TrivialBaseline
    tfidf: TfidfBaseline | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskBaselines:
        tfidf = data.get("tfidf")
        return cls(TrivialBaseline(**data["trivial"]), TfidfBaseline(**tfidf) if tfidf else None)


def _main_metric(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(compute_metrics(task, predictions, labels)["main"])


def _labels(task: GlueTask, examples: Sequence[Example]) -> np.ndarray:
    if any(e.label is None for e in examples):
        raise BeexError(f"{task.name}: a baseline needs labelled examples")
    return np.array([e.label for e in examples], dtype=np.float64 if task.is_regression else np.int64)


def trivial_baseline(task: GlueTask, dev: Sequence[Example]) -> TrivialBaseline:
    """The best constant answer on `dev` for the task's main metric."""
    labels = _labels(task, dev)
    if task.is_regression:
        # A constant score has no correlation with anything: Pearson 0 by definition (computing it on a
        # constant array gives 1e-19-sized rounding noise instead).
        return TrivialBaseline(task.name, task.main_metric, 0.0, "any constant score", len(labels))
    scores = {c: _main_metric(task, np.full(len(labels), c), labels) for c in range(task.num_labels)}
    best = max(scores, key=lambda c: (scores[c], -c))  # ties (MCC: 0 for every constant) go to class 0
    if task.main_metric == "matthews":
        answer = "any constant class"
    elif task.main_metric == "accuracy":
        answer = f"majority class '{task.label_list[best]}'"
    else:
        answer = f"always '{task.label_list[best]}'"
    return TrivialBaseline(task.name, task.main_metric, scores[best], answer, len(labels))


# ------------------------------------------------------------------------------------------------ TF-IDF


def _features(vectorizer: Any, examples: Sequence[Example], is_pair: bool) -> Any:
    """Sparse features: a sentence's TF-IDF vector; for a pair [a, b, a * b, cos(a, b)]."""
    from scipy import sparse

    a = vectorizer.transform([e.text_a for e in examples])
    if not is_pair:
        return a
    b = vectorizer.transform([e.text_b or "" for e in examples])
    shared = a.multiply(b)
    # Rows are L2-normalised by the vectorizer, so the row sums of a * b are the cosine similarities.
    cosine = sparse.csr_matrix(np.asarray(shared.sum(axis=1)))
    return sparse.hstack([a, b, shared, cosine], format="csr")


def _fit_predict(task: GlueTask, train: Sequence[Example], test: Sequence[Example], value: float) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
    texts = [e.text_a for e in train] + ([e.text_b or "" for e in train] if task.is_pair else [])
    vectorizer.fit(texts)
    x_train, x_test = _features(vectorizer, train, task.is_pair), _features(vectorizer, test, task.is_pair)
    y = _labels(task, train)
    if task.is_regression:
        return Ridge(alpha=value).fit(x_train, y).predict(x_test)
    if task.num_labels == 2:
        # The dual problem: far more features (bigrams, and three blocks of them for pairs) than samples,
        # where liblinear's dual solver was 5-100x faster than its primal one and lbfgs here.
        model = LogisticRegression(C=value, solver="liblinear", dual=True, max_iter=5000)
    else:
        model = LogisticRegression(C=value, max_iter=2000)
    return model.fit(x_train, y).predict(x_test)


def tfidf_baseline(
    task: GlueTask, train: Sequence[Example], dev: Sequence[Example], grid: Sequence[float] | None = None
) -> TfidfBaseline:
    """Choose the hyper-parameter on a held-out slice of `train`, refit on all of it, score on `dev`."""
    started = time.perf_counter()
    grid = tuple(grid or (ALPHA_GRID if task.is_regression else C_GRID))
    # The trainer's own split function (fraction, no cap): one way to hold a slice of train out.
    fit_idx, held_idx = split_holdout(len(train), HELD_OUT_FRACTION, len(train), SPLIT_SEED)
    if not held_idx.size:
        raise BeexError(f"{len(train)} training examples are too few to hold {HELD_OUT_FRACTION:.0%} of them out")
    fit = [train[i] for i in fit_idx]
    held = [train[i] for i in held_idx]
    held_labels = _labels(task, held)
    scores = {value: _main_metric(task, _fit_predict(task, fit, held, value), held_labels) for value in grid}
    chosen = max(grid, key=lambda v: (scores[v], -grid.index(v)))  # ties: the first (smallest) value
    value = _main_metric(task, _fit_predict(task, train, dev, chosen), _labels(task, dev))
    return TfidfBaseline(
        task=task.name,
        metric_name=task.main_metric,
        value=value,
        model="ridge regression" if task.is_regression else "logistic regression",
        parameter="alpha" if task.is_regression else "C",
        chosen=chosen,
        held_out_scores={f"{v:g}": scores[v] for v in grid},
        n_train=len(train),
        n_held_out=len(held),
        n_dev=len(dev),
        seconds=time.perf_counter() - started,
    )


def task_baselines(
    task: GlueTask, train: Sequence[Example], dev: Sequence[Example], with_tfidf: bool = True
) -> TaskBaselines:
    return TaskBaselines(trivial_baseline(task, dev), tfidf_baseline(task, train, dev) if with_tfidf else None)


def report_baselines(
    tasks: Sequence[str],
    data_dir: str,
    max_train_samples: int | None = None,
    max_dev_samples: int | None = None,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """{task: TaskBaselines as a dict} on the same train and dev examples the report's runs see.

    With `cache_dir`, a task's result is kept in CACHE_DIR/baselines-TASK.json with the inputs it depends on,
    so that resuming a report does not refit SST-2's (a minute and a half on one core)."""
    from beexformer.data.glue import get_task, load_split

    out = {}
    for name in tasks:
        task = get_task(name)
        train = load_split(task, "train", data_dir)[:max_train_samples]
        dev = load_split(task, "dev", data_dir)[:max_dev_samples]
        key = {"n_train": len(train), "n_dev": len(dev), "grids": [C_GRID, ALPHA_GRID]}
        key["split"] = [HELD_OUT_FRACTION, SPLIT_SEED]
        cached = _read_cache(cache_dir, name, key)
        result = cached or task_baselines(task, train, dev)
        if cached is None and cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            (cache_dir / f"baselines-{name}.json").write_text(json.dumps({"key": key, "result": result.to_dict()}))
        log(
            f"[baselines {name}] trivial {100 * result.trivial.value:.2f}, TF-IDF {100 * result.tfidf.value:.2f} "
            f"({result.tfidf.parameter} = {result.tfidf.chosen:g} on the held-out slice, {result.tfidf.seconds:.0f} s)"
        )
        out[name] = result.to_dict()
    return out


def _read_cache(cache_dir: Path | None, name: str, key: dict[str, Any]) -> TaskBaselines | None:
    if cache_dir is None:
        return None
    try:
        stored = json.loads((cache_dir / f"baselines-{name}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if stored.get("key") != json.loads(json.dumps(key)):
        return None
    return TaskBaselines.from_dict(stored["result"])
