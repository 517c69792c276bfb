"""Exit rules: given the logits of the exits a sample has passed so far, leave now or go on?

Numpy only (no torch), so the PyTorch model and the packed 1-bit runtime import the same code and take
exactly the same decisions. Every rule is a small class with one method,

    should_exit(history) -> bool[B]      history: float array [B, c, K], the logits of blocks 1..c

and the block whose prediction is returned at exit (`returns`: "current" = block c, the default, or
"previous" = block c-1; docs/design.md section 5 leaves this open). The last block always answers. Exit
decisions are per sample and never stored on the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of softmax(logits) over the last axis; exact 0 for a one-hot distribution."""
    logp = log_softmax(logits)
    p = np.exp(logp)
    return -(p * np.where(p > 0, logp, 0.0)).sum(axis=-1)


def max_probability(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits).max(axis=-1))


@dataclass
class Prediction:
    """What every way of running a model answers, per sample: the logits it answers with, its prediction and
    the block it left at (1-based). The one output type of the PyTorch model (`BEExformer.early_exit`), the
    packed runtime (`PackedModel.run`), offline decisions (`ExitRule.decide`) and `inference.Predictor`."""

    logits: np.ndarray  # float [B, K]
    predictions: np.ndarray  # int class index [B], or float score for regression
    exit_block: np.ndarray  # int [B], 1..C
    exit_logits: np.ndarray | None = None  # float [C, B, K]: every exit, only when run without an exit rule

    @property
    def mean_exit_block(self) -> float:
        return float(self.exit_block.mean()) if len(self.exit_block) else float("nan")


def predictions_from_logits(logits: np.ndarray) -> np.ndarray:
    """argmax for classification (K > 1), the score itself for regression (K == 1)."""
    return logits[..., 0].astype(np.float64) if logits.shape[-1] == 1 else logits.argmax(axis=-1)


class ExitRule(ABC):
    """Base class. Subclasses implement `should_exit`; `decide` applies it to precomputed logits."""

    name = "base"
    threshold_name = "threshold"
    # The earliest block at which `should_exit` can fire (rules that compare blocks need a history): a model
    # whose every sample leaves there has not used early exit to tell easy inputs from hard ones.
    first_exit_block = 1

    def __init__(self, returns: str = "current") -> None:
        if returns not in ("current", "previous"):
            raise ValueError(f"returns must be 'current' or 'previous', got {returns!r}")
        self.returns = returns

    @abstractmethod
    def should_exit(self, history: np.ndarray) -> np.ndarray:
        """history: [B, c, K] logits of blocks 1..c. Returns bool [B]: leave at block c?"""

    def answer(self, history: np.ndarray) -> np.ndarray:
        """The logits [B, K] a sample that exits at block c answers with."""
        if self.returns == "previous" and history.shape[1] >= 2:
            return history[:, -2]
        return history[:, -1]

    def decide(self, all_logits: np.ndarray) -> Prediction:
        """Offline form: all_logits [B, C, K] of every exit; the first block where the rule fires, else C.

        Gives the same decisions as block-by-block inference, because it runs the same `ExitTracker` and
        `should_exit` only sees blocks <= c.
        """
        all_logits = np.asarray(all_logits)
        tracker = ExitTracker(self, *all_logits.shape)
        for c in range(all_logits.shape[1]):
            tracker.step(all_logits[tracker.active, c])
            if tracker.done:
                break
        return tracker.decision()

    def describe(self) -> str:
        return f"{self.name}({self.threshold_name}={getattr(self, self.threshold_name)})"


class ExitTracker:
    """Per-sample exit bookkeeping for block-by-block inference on a shrinking batch.

    The one place where exit decisions are recorded, shared by the PyTorch model (`BEExformer.early_exit`),
    the packed runtime and the offline `ExitRule.decide`: feed it the logits of the samples still in the
    batch after each block; it records who leaves (and with which answer) and returns the mask of those
    who stay, which the caller uses to compact its own activations. The last block always answers.
    """

    def __init__(self, rule: ExitRule, n_samples: int, n_blocks: int, n_outputs: int) -> None:
        self.rule, self.n_blocks = rule, n_blocks
        self.active = np.arange(n_samples)  # original indices of the samples still in the batch
        # logits of the blocks passed, [n_active, n_blocks, K] filled up to `passed` (kept compacted): one
        # buffer instead of a list stacked again at every block (np.stack was a fifth of a step's time)
        self.history: np.ndarray | None = None
        self.passed = 0
        self.exit_block = np.zeros(n_samples, dtype=np.int64)
        self.answer: np.ndarray | None = None  # [n_samples, K], allocated with the logits' dtype
        self.n_outputs = n_outputs

    @property
    def done(self) -> bool:
        return len(self.active) == 0

    def step(self, block_logits: np.ndarray) -> np.ndarray:
        """Logits [n_active, K] of the next block; returns the bool mask [n_active] of samples that stay."""
        block_logits = np.asarray(block_logits)
        if self.answer is None:
            self.answer = np.zeros((len(self.exit_block), self.n_outputs), dtype=block_logits.dtype)
            shape = (len(self.active), self.n_blocks, block_logits.shape[-1])
            self.history = np.empty(shape, dtype=block_logits.dtype)
        self.history[:, self.passed] = block_logits
        self.passed += 1
        stacked = self.history[:, : self.passed]  # [n_active, c, K]
        if self.passed == self.n_blocks:
            leave, chosen = np.ones(len(self.active), dtype=bool), stacked[:, -1]
        else:
            leave, chosen = np.asarray(self.rule.should_exit(stacked), dtype=bool), self.rule.answer(stacked)
        self.answer[self.active[leave]] = chosen[leave]
        self.exit_block[self.active[leave]] = self.passed
        keep = ~leave
        if leave.any():
            self.active = self.active[keep]
            self.history = self.history[keep]
        return keep

    def decision(self) -> Prediction:
        return Prediction(self.answer, predictions_from_logits(self.answer), self.exit_block)


class FractionalEntropy(ExitRule):
    """The paper's rule: leave at the first c >= 2 where (H_{c-1} - H_c) / max(H_{c-1}, eps) < delta.

    A near-zero previous entropy gives a Delta <= 0 and so exits (already certain); a rising entropy
    ("overthinking") gives a negative Delta and exits too.
    """

    name = "fractional_entropy"
    threshold_name = "delta"
    first_exit_block = 2

    def __init__(self, delta: float = 0.05, eps: float = 1e-8, returns: str = "current") -> None:
        super().__init__(returns)
        self.delta, self.eps = delta, eps

    def should_exit(self, history: np.ndarray) -> np.ndarray:
        if history.shape[1] < 2:
            return np.zeros(history.shape[0], dtype=bool)
        # Both blocks' entropies in one call (numpy call overhead, not arithmetic, is the cost at these sizes:
        # half the time); the reductions run per row over K, so the values are those of two calls, bit for bit.
        both = entropy(history[:, -2:])
        h_prev, h_cur = both[:, 0], both[:, 1]
        reduction = (h_prev - h_cur) / np.maximum(h_prev, self.eps)
        return reduction < self.delta


class AbsoluteEntropy(ExitRule):
    """DeeBERT: leave as soon as the exit's entropy is at most tau."""

    name = "entropy"
    threshold_name = "tau"

    def __init__(self, tau: float = 0.2, returns: str = "current") -> None:
        super().__init__(returns)
        self.tau = tau

    def should_exit(self, history: np.ndarray) -> np.ndarray:
        return entropy(history[:, -1]) <= self.tau


class MaxProbability(ExitRule):
    """Confidence: leave as soon as the largest class probability is at least lambda."""

    name = "max_prob"
    threshold_name = "confidence"

    def __init__(self, confidence: float = 0.9, returns: str = "current") -> None:
        super().__init__(returns)
        self.confidence = confidence

    def should_exit(self, history: np.ndarray) -> np.ndarray:
        return max_probability(history[:, -1]) >= self.confidence


class Patience(ExitRule):
    """PABEE: leave once the argmax has stayed the same for `patience` consecutive blocks after the first."""

    name = "patience"
    threshold_name = "patience"

    def __init__(self, patience: int = 2, returns: str = "current") -> None:
        super().__init__(returns)
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.patience = int(patience)
        self.first_exit_block = self.patience + 1

    def should_exit(self, history: np.ndarray) -> np.ndarray:
        if history.shape[1] <= self.patience:
            return np.zeros(history.shape[0], dtype=bool)
        recent = history[:, -(self.patience + 1) :].argmax(axis=-1)
        return (recent == recent[:, :1]).all(axis=1)


class RegressionPatience(ExitRule):
    """For regression (entropy is undefined): leave once the predicted score has moved by less than `tol`
    for `patience` consecutive blocks."""

    name = "regression_patience"
    threshold_name = "tol"

    def __init__(self, tol: float = 0.1, patience: int = 1, returns: str = "current") -> None:
        super().__init__(returns)
        self.tol, self.patience = tol, int(patience)
        self.first_exit_block = self.patience + 1

    def should_exit(self, history: np.ndarray) -> np.ndarray:
        if history.shape[1] <= self.patience:
            return np.zeros(history.shape[0], dtype=bool)
        scores = history[:, -(self.patience + 1) :, 0]
        return (np.abs(np.diff(scores, axis=1)) < self.tol).all(axis=1)


class NeverExit(ExitRule):
    """Every sample runs all blocks: the "without early exit" baseline."""

    name = "none"
    threshold_name = "returns"

    def should_exit(self, history: np.ndarray) -> np.ndarray:
        return np.zeros(history.shape[0], dtype=bool)

    def describe(self) -> str:
        return "none"


EXIT_RULES: dict[str, type[ExitRule]] = {
    r.name: r for r in (FractionalEntropy, AbsoluteEntropy, MaxProbability, Patience, RegressionPatience, NeverExit)
}

# Thresholds a sweep tries per rule (docs/design.md section 5 for the paper's delta).
SWEEP_GRIDS: dict[str, list[float]] = {
    "fractional_entropy": [-0.5, -0.2, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5],
    "entropy": [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    "max_prob": [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999],
    "patience": [1, 2, 3, 4, 5],
    "regression_patience": [0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
}
CLASSIFICATION_RULES = ("fractional_entropy", "entropy", "patience", "max_prob")


def build_exit_rule(name: str, threshold: float | None = None, **kwargs) -> ExitRule:
    """Build a rule by name; `threshold` sets its main knob (delta, tau, patience, confidence or tol)."""
    try:
        cls = EXIT_RULES[name]
    except KeyError:
        raise ValueError(f"unknown exit rule {name!r}; choose one of {', '.join(EXIT_RULES)}") from None
    if threshold is not None and cls is not NeverExit:
        kwargs[cls.threshold_name] = threshold
    return cls(**kwargs)


REGRESSION_RULES = ("regression_patience",)


def check_rule_fits(name: str, is_regression: bool) -> None:
    """Refuse a rule that cannot judge this kind of head (ValueError, one line).

    A one-output regression head has softmax([x]) = 1, so its entropy is always 0: an entropy rule lets every
    sample leave at the earliest block it may, and reports the largest "FLOPs saved" for nothing. Score
    patience reads the first output as a score, which means nothing for class logits."""
    if name == NeverExit.name:
        return
    if is_regression and name not in REGRESSION_RULES:
        raise ValueError(
            f"exit rule {name!r} reads class probabilities, but this is a regression task (one output, entropy "
            f"always 0): use {' or '.join(REGRESSION_RULES)}"
        )
    if not is_regression and name in REGRESSION_RULES:
        raise ValueError(f"exit rule {name!r} is for regression tasks; choose one of {', '.join(CLASSIFICATION_RULES)}")


def default_exit_rule(is_regression: bool) -> ExitRule:
    """The paper's rule for classification (delta = 0.05); score patience for regression."""
    return RegressionPatience() if is_regression else FractionalEntropy()
