"""The held-out splits: by example (trainer and TF-IDF baseline; disjoint, seeded, capped) and by sentence."""

from __future__ import annotations

import numpy as np
import pytest

from beexformer.data.glue import Example
from beexformer.errors import ConfigError
from beexformer.training.holdout import split_by_sentence, split_holdout, split_training_set


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


# Two parse trees in the SST-2 manner (every phrase a training text), a duplicate sentence, and texts that share
# characters but not whole words with a sentence.
PHRASES = [
    "the film is good .",  # 0 sentence
    "the film",  # 1 inside 0 and 3
    "is good",  # 2 inside 0
    "the film is bad , sadly .",  # 3 sentence
    "bad , sadly",  # 4 inside 3
    "the film is good .",  # 5 duplicate of 0: the first one counts as the sentence, this one is inside it
    "film is goo",  # 6 characters of 0, not whole words: a sentence of its own
    "  is   good ",  # 7 spacing differs from 2: still inside 0
]


def test_sentence_split_holds_out_whole_sentences_and_drops_their_phrases():
    sentences = {0, 3, 6}
    for seed in range(8):
        fit, held = split_by_sentence(PHRASES, 0.5, 10, seed)
        assert len(held) == 2 and set(held.tolist()) <= sentences  # round(0.5 * 3 sentences)
        padded = [f" {' '.join(t.split())} " for t in PHRASES]
        for i in fit:  # no training text lies inside a held-out sentence ...
            assert not any(padded[i] in padded[h] for h in held)
        for i in range(len(PHRASES)):  # ... and every other text trains
            assert i in fit or any(padded[i] in padded[h] for h in held)
    fit, held = split_by_sentence(PHRASES, 0.1, 1, 0)
    assert len(held) == 1  # at least one sentence when asked for any, at most the cap
    assert split_by_sentence(PHRASES, 0.0, 10, 0)[1].size == 0


def test_sentence_split_when_sentence_zero_is_held_out():
    fit, held = next(split_by_sentence(PHRASES, 0.34, 10, s) for s in range(50)
                     if split_by_sentence(PHRASES, 0.34, 10, s)[1].tolist() == [0])  # fmt: skip
    assert fit.tolist() == [3, 4, 6]  # 1, 2, 5 and 7 lie inside sentence 0 (1 is inside 3 too: dropped all the same)


def test_sentence_split_refuses_pairs():
    examples = [Example("a b", "c d", 1), Example("e f", "g h", 0)]
    with pytest.raises(ConfigError, match="single-sentence"):
        split_training_set(examples, 0.5, "sentence", 10, 0)
    assert split_training_set(examples, 0.5, "example", 10, 0)[1].size == 1


def test_sentence_split_needs_a_holdout_share():
    from beexformer.training.arguments import TrainingArguments

    with pytest.raises(ConfigError, match="holdout is 0"):
        TrainingArguments(holdout_by="sentence").validate()  # from scratch: holdout defaults to 0
    with pytest.raises(ConfigError, match="choose one of"):
        TrainingArguments(holdout_by="phrase").validate()
    assert TrainingArguments(holdout_by="sentence", holdout=0.1).validate().holdout_by == "sentence"
