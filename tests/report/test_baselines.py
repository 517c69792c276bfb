"""Trivial and TF-IDF baselines on known values, and the two rules of what counts as a met goal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beexformer.data.glue import Example, get_task, load_split
from beexformer.report.baselines import (
    TaskBaselines,
    report_baselines,
    task_baselines,
    tfidf_baseline,
    trivial_baseline,
)
from beexformer.report.goals import all_at_first_exit, beats, flops_goal_met


def labelled(task: str, labels: list) -> list[Example]:
    pair = get_task(task).is_pair
    return [Example(f"sentence {i}", f"other {i}" if pair else None, y) for i, y in enumerate(labels)]


def test_trivial_is_the_best_constant_for_each_metric():
    # accuracy: the majority class of dev (7 of 10 are class 1)
    sst2 = trivial_baseline(get_task("sst2"), labelled("sst2", [1] * 7 + [0] * 3))
    assert sst2.value == pytest.approx(0.7) and sst2.answer == "majority class 'positive'"
    # F1 (MRPC): always answering positive, F1 = 2p / (1 + p) for a positive share p, even where it is rare
    mrpc = trivial_baseline(get_task("mrpc"), labelled("mrpc", [1] * 3 + [0] * 7))
    assert mrpc.value == pytest.approx(2 * 0.3 / 1.3) and mrpc.answer == "always 'equivalent'"
    # MCC (CoLA) and Pearson (STS-B): a constant has no correlation
    assert trivial_baseline(get_task("cola"), labelled("cola", [1, 0, 1, 1])).value == 0.0
    assert trivial_baseline(get_task("stsb"), labelled("stsb", [0.5, 4.0, 2.5])).value == 0.0


def test_trivial_on_the_real_dev_sets_matches_the_known_values(glue_dir: Path):
    known = {"sst2": 50.92, "mrpc": 81.22, "rte": 52.71, "wnli": 56.34, "cola": 0.0, "stsb": 0.0}
    for name, value in known.items():
        task = get_task(name)
        assert 100 * trivial_baseline(task, load_split(task, "dev", glue_dir)).value == pytest.approx(value, abs=0.005)


def _sentiment(n: int, seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    good, bad, filler = ["great", "lovely", "superb"], ["awful", "dull", "poor"], ["the", "film", "was", "plot"]
    out = []
    for _ in range(n):
        y = int(rng.integers(2))
        words = list(rng.choice(filler, 4)) + [str(rng.choice(good if y else bad))]
        out.append(Example(" ".join(rng.permutation(words)), None, y))
    return out


def test_tfidf_learns_a_separable_task_and_never_looks_at_dev_labels():
    task = get_task("sst2")
    train, dev = _sentiment(300, 0), _sentiment(100, 1)
    result = tfidf_baseline(task, train, dev)
    assert result.value == 1.0 and result.n_held_out == 30 and result.n_train == 300
    assert set(result.held_out_scores) == {"0.25", "0.5", "1", "2", "4", "8", "16"}
    # The choice depends on train alone: with every dev label flipped it is the same, and dev scores 0.
    flipped = [Example(e.text_a, None, 1 - e.label) for e in dev]
    other = tfidf_baseline(task, train, flipped)
    assert (other.chosen, other.held_out_scores) == (result.chosen, result.held_out_scores)
    assert other.value == 0.0


def test_tfidf_ridge_on_pairs_uses_the_overlap_of_the_two_sentences():
    # STS-B-like: the score is the number of words (out of 4) the two sentences share; a bag of both
    # sentences alone cannot see that, the product and cosine features can.
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(40)]

    def make(n: int) -> list[Example]:
        out = []
        for _ in range(n):
            a = list(rng.choice(vocab, 4, replace=False))
            k = int(rng.integers(5))
            b = a[:k] + [w for w in rng.choice(vocab, 8, replace=False) if w not in a][: 4 - k]
            out.append(Example(" ".join(a), " ".join(b), float(k)))
        return out

    result = tfidf_baseline(get_task("stsb"), make(400), make(200))
    assert result.model == "ridge regression" and result.parameter == "alpha"
    assert result.value > 0.9


def test_report_baselines_are_cached_per_task_and_round_trip(glue_dir: Path, tmp_path: Path):
    lines: list[str] = []
    first = report_baselines(["rte"], str(glue_dir), 200, 50, tmp_path, log=lines.append)
    assert (tmp_path / "baselines-rte.json").is_file() and "trivial" in lines[0]
    again = report_baselines(["rte"], str(glue_dir), 200, 50, tmp_path, log=lines.append)
    assert again == first  # read back, seconds included: not refit
    assert TaskBaselines.from_dict(first["rte"]).tfidf.n_train == 200
    other = report_baselines(["rte"], str(glue_dir), 300, 50, tmp_path, log=lines.append)
    assert other["rte"]["tfidf"]["n_train"] == 300  # another budget: refit


def test_task_baselines_without_tfidf():
    result = task_baselines(get_task("sst2"), [], labelled("sst2", [0, 0, 1]), with_tfidf=False)
    assert result.tfidf is None and result.trivial.value == pytest.approx(2 / 3)


def test_beats_is_strict():
    assert beats(0.5271, 0.5271) is False
    assert beats(0.53, 0.5271) is True
    assert beats(None, 0.5) is None


def test_all_at_first_exit_knows_each_rules_earliest_block():
    # fractional entropy cannot leave before block 2: all at block 2 is degenerate, all at block 3 is not
    assert all_at_first_exit([0, 831, 0, 0, 0, 0], "fractional_entropy", 0.05) == 2
    assert all_at_first_exit([0, 0, 831, 0, 0, 0], "fractional_entropy", 0.05) is None
    assert all_at_first_exit([0, 545, 230, 62, 35, 0], "fractional_entropy", 0.05) is None
    # an entropy rule can leave at block 1 (STS-B under an entropy rule: entropy 0 everywhere)
    assert all_at_first_exit([1500, 0, 0], "entropy", 0.2) == 1
    assert all_at_first_exit([0, 1500, 0], "entropy", 0.2) is None
    assert all_at_first_exit([0, 0, 7, 0], "patience", 2) == 3
    assert all_at_first_exit([0, 4500, 0, 0, 0, 0], "regression_patience", 0.1) == 2


def test_flops_goal_needs_the_saving_and_a_real_choice_of_exits():
    assert flops_goal_met(0.57, 0.52, [0, 545, 230, 62, 35, 0], "fractional_entropy", 0.05) is True
    assert flops_goal_met(0.666, 0.52, [0, 831, 0, 0, 0, 0], "fractional_entropy", 0.05) is False
    assert flops_goal_met(0.45, 0.52, [0, 545, 230, 62, 35, 0], "fractional_entropy", 0.05) is False
    assert flops_goal_met(None, 0.52, [], "fractional_entropy", 0.05) is None
