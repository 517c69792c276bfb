"""Optimizer groups: exit heads and latent 1-bit weights get their own lr only when asked; every parameter is in
exactly one group; a regression start answers the mean training score."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from beexformer.config import BEExformerConfig
from beexformer.model import BEExformer
from beexformer.training.arguments import TrainingArguments
from beexformer.training.trainer import _param_groups, _start_at_label_mean


def _model(n_classes: int = 2) -> BEExformer:
    return BEExformer(BEExformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_blocks=2, n_classes=n_classes))


def _groups(**changes):
    model = _model()
    args = TrainingArguments(init="x", **{"lr": 5e-5, "head_lr": 5e-5, **changes}).validate()
    return model, args, _param_groups(model, args)


def _assert_partition(model, groups):
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_same_lrs_keep_the_two_groups_of_older_checkpoints():
    model, _, groups = _groups()
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0] and all("lr" not in g for g in groups)
    _assert_partition(model, groups)


def test_head_lr_puts_every_exit_parameter_and_nothing_else_at_that_lr():
    model, args, groups = _groups(head_lr=1e-3)
    _assert_partition(model, groups)
    at_head_lr = {id(p) for g in groups if g.get("lr") == 1e-3 for p in g["params"]}
    assert at_head_lr == {id(p) for p in model.exits.parameters()}
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert all((id(p) in no_decay) == (p.ndim < 2) for p in model.exits.parameters())


def test_binary_and_head_groups_together():
    model, _, groups = _groups(head_lr=1e-3, binary_lr=5e-4)
    _assert_partition(model, groups)
    assert sorted({g.get("lr", 5e-5) for g in groups}) == [5e-5, 5e-4, 1e-3]


def test_head_lr_must_be_positive():
    from beexformer.errors import ConfigError

    with pytest.raises(ConfigError, match="head_lr"):
        TrainingArguments(head_lr=0.0).validate()


def test_regression_exits_start_at_the_mean_training_score():
    model = _model(n_classes=1)
    _start_at_label_mean(model, [SimpleNamespace(label=v) for v in (1.0, 2.0, 4.5)])
    assert all(head.fc2.bias.item() == pytest.approx(2.5) for head in model.exits)
