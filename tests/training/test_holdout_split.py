"""The one held-out split of the project (trainer and TF-IDF baseline): disjoint, seeded, capped."""

from __future__ import annotations

import numpy as np

from beexformer.training.holdout import split_holdout


def test_split_is_disjoint_seeded_and_a_tenth():
    fit, held = split_holdout(1000, 0.1, 1000, seed=0)
    assert len(held) == 100 and len(fit) == 900
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(1000))
    assert held.tolist() == split_holdout(1000, 0.1, 1000, seed=0)[1].tolist()
    assert held.tolist() != split_holdout(1000, 0.1, 1000, seed=1)[1].tolist()


def test_cap_and_edges():
    assert len(split_holdout(100_000, 0.1, 2000, seed=0)[1]) == 2000
    assert len(split_holdout(5, 0.01, 10, seed=0)[1]) == 1  # at least one example when asked for any
    assert len(split_holdout(5, 0.0, 10, seed=0)[1]) == 0
    assert len(split_holdout(2, 0.9, 10, seed=0)[0]) == 1  # never all of it
