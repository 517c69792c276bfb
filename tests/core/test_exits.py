"""Exit rules on hand-made logit sequences whose entropies are known."""

import math

import numpy as np
import pytest

from beexformer.exits import (
    AbsoluteEntropy,
    FractionalEntropy,
    MaxProbability,
    NeverExit,
    Patience,
    RegressionPatience,
    build_exit_rule,
    entropy,
)


def two_class(p: float) -> list[float]:
    """Logits of a 2-class distribution with P(class 0) = p."""
    p = min(max(p, 1e-300), 1 - 1e-16)
    return [math.log(p), math.log(1 - p)]


def run(rule, seqs):
    return rule.decide(np.array(seqs, dtype=np.float64))


def test_entropy_values():
    assert entropy(np.array([[0.0, 0.0]]))[0] == pytest.approx(math.log(2))
    assert entropy(np.array([[1000.0, 0.0]]))[0] == 0.0
    assert entropy(np.zeros((1, 5)))[0] == pytest.approx(math.log(5))


def test_fractional_entropy_plateau_exits_at_block_2():
    seq = [two_class(0.8)] * 4  # Delta = 0 < delta
    assert run(FractionalEntropy(0.05), [seq]).exit_block.tolist() == [2]


def test_fractional_entropy_keeps_going_while_entropy_falls_fast():
    # entropies of p = 0.6, 0.8, 0.95, 0.99, 0.995: fractional reductions 0.26, 0.59, 0.72, 0.45 (> delta)
    # then p = 0.995 -> 0.9951 is a plateau: exit at block 6
    seq = [two_class(p) for p in (0.6, 0.8, 0.95, 0.99, 0.995, 0.9951, 0.9999)]
    h = entropy(np.array(seq))
    reductions = (h[:-1] - h[1:]) / h[:-1]
    assert (reductions[:4] > 0.2).all() and reductions[4] < 0.05
    assert run(FractionalEntropy(0.05), [seq]).exit_block.tolist() == [6]
    assert run(FractionalEntropy(0.3), [seq]).exit_block.tolist() == [2]  # 0.26 < 0.3


def test_fractional_entropy_rising_entropy_exits():
    seq = [two_class(0.95), two_class(0.7), two_class(0.99), two_class(0.999)]
    decision = run(FractionalEntropy(0.05), [seq])
    assert decision.exit_block.tolist() == [2]
    assert decision.predictions.tolist() == [0]


def test_fractional_entropy_already_certain_exits():
    seq = [[50.0, -50.0], [40.0, -40.0], [0.0, 0.0]]  # H_1 = 0 (to float precision)
    assert run(FractionalEntropy(0.05, eps=1e-8), [seq]).exit_block.tolist() == [2]


def test_fractional_entropy_cannot_exit_at_block_1():
    assert not FractionalEntropy(10.0).should_exit(np.zeros((3, 1, 2))).any()


def test_returns_previous_block_prediction():
    seq = [two_class(0.9), two_class(0.2), two_class(0.1)]  # entropy rises at 2: exit
    assert run(FractionalEntropy(0.05, returns="current"), [seq]).predictions.tolist() == [1]
    assert run(FractionalEntropy(0.05, returns="previous"), [seq]).predictions.tolist() == [0]


def test_never_confident_runs_every_block():
    seq = [[0.0, 0.0, 0.0]] * 5
    for rule in (AbsoluteEntropy(0.3), MaxProbability(0.9), NeverExit()):
        assert run(rule, [seq]).exit_block.tolist() == [5], rule
    # a flat entropy is a plateau for the fractional rule: it stops improving, so it leaves
    assert run(FractionalEntropy(0.05), [seq]).exit_block.tolist() == [2]


def test_absolute_entropy_and_max_probability_thresholds():
    seq = [two_class(p) for p in (0.6, 0.85, 0.97, 0.999)]
    h = entropy(np.array(seq))
    assert run(AbsoluteEntropy(tau=h[2] + 1e-9), [seq]).exit_block.tolist() == [3]
    assert run(AbsoluteEntropy(tau=h[2] - 1e-9), [seq]).exit_block.tolist() == [4]
    assert run(MaxProbability(0.85), [seq]).exit_block.tolist() == [2]
    assert run(MaxProbability(0.96), [seq]).exit_block.tolist() == [3]
    assert run(MaxProbability(0.5), [seq]).exit_block.tolist() == [1]


def test_patience_counts_unchanged_argmax():
    seq = [two_class(0.6), two_class(0.4), two_class(0.3), two_class(0.45), two_class(0.2), two_class(0.9)]
    # argmax: 0, 1, 1, 1, 1, 0
    assert run(Patience(1), [seq]).exit_block.tolist() == [3]
    assert run(Patience(2), [seq]).exit_block.tolist() == [4]
    assert run(Patience(3), [seq]).exit_block.tolist() == [5]
    assert run(Patience(5), [seq]).exit_block.tolist() == [6]


def test_regression_patience_on_score_changes():
    seq = [[[1.0]], [[2.0]], [[2.05]], [[2.06]], [[4.0]]]
    seq = [s[0] for s in seq]
    assert run(RegressionPatience(tol=0.1, patience=1), [seq]).exit_block.tolist() == [3]
    assert run(RegressionPatience(tol=0.1, patience=2), [seq]).exit_block.tolist() == [4]
    decision = run(RegressionPatience(tol=0.01), [seq])
    assert decision.exit_block.tolist() == [5] and decision.predictions.tolist() == [4.0]


def test_decisions_are_per_sample_in_a_batch():
    a = [two_class(0.8)] * 4  # plateau: leaves at 2
    b = [two_class(p) for p in (0.6, 0.8, 0.95, 0.99)]  # keeps falling fast: runs to 4
    decision = run(FractionalEntropy(0.05), [a, b])
    assert decision.exit_block.tolist() == [2, 4]
    assert decision.mean_exit_block == 3.0


def test_build_exit_rule_by_name():
    assert build_exit_rule("fractional_entropy", 0.1).delta == 0.1
    assert build_exit_rule("patience", 3).patience == 3
    assert build_exit_rule("max_prob", 0.7).confidence == 0.7
    with pytest.raises(ValueError, match="fractional_entropy"):
        build_exit_rule("oracle")


@pytest.mark.parametrize(
    "rule",
    [FractionalEntropy(0.05), AbsoluteEntropy(0.2), MaxProbability(0.9), Patience(1), Patience(3),
     RegressionPatience(0.1, 1), RegressionPatience(0.1, 2)],
)  # fmt: skip
def test_first_exit_block_is_where_a_constant_certain_input_leaves(rule):
    # The same confident logits at every block: every rule fires as soon as it is able to, and no earlier.
    logits = [5.0] if isinstance(rule, RegressionPatience) else two_class(0.999)
    assert run(rule, [[logits] * 6]).exit_block.tolist() == [rule.first_exit_block]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 17])
def test_entropy_of_several_blocks_at_once_is_bitwise_per_block(k, dtype):
    """FractionalEntropy takes both blocks' entropies in one call; each must be exactly the one-block value,
    so the PyTorch model and the packed runtime keep taking the same decisions as before."""
    rng = np.random.default_rng(k)
    history = (rng.standard_normal((33, 4, k)) * rng.choice([0.01, 1.0, 40.0], size=(33, 4, 1))).astype(dtype)
    both = entropy(history[:, -2:])
    assert np.array_equal(both[:, 0], entropy(history[:, -2]))
    assert np.array_equal(both[:, 1], entropy(history[:, -1]))
    h_prev, h_cur = entropy(history[:, -2]), entropy(history[:, -1])
    expected = (h_prev - h_cur) / np.maximum(h_prev, 1e-8) < 0.05
    assert np.array_equal(FractionalEntropy(0.05).should_exit(history), expected)
