"""The binarization ramp: the blend of float and 1-bit weights, its schedule, and that nothing outside a
training step (evaluation, checkpoints, export) ever sees a blend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from beexformer.binarize import binarize_weight, get_quantizer
from beexformer.cli.main import main
from beexformer.layers.binary_linear import BinaryLinear
from beexformer.layers.embedding import BinaryEmbedding
from beexformer.training import trainer as trainer_module
from beexformer.training.ramp import binarization_level, ramp_level

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"


def test_the_level_rises_linearly_over_the_ramp_then_stays_at_one():
    assert [ramp_level(s, 10, 0.5) for s in range(7)] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    assert ramp_level(0, 10, 0.0) == 1.0  # no ramp: 1-bit from the first step


def test_a_linear_is_float_at_level_zero_one_bit_at_one_and_the_blend_between():
    torch.manual_seed(0)
    layer = BinaryLinear(16, 8)
    x = torch.randn(4, 16)
    w = layer.weight.detach()
    w_bin = binarize_weight(w, get_quantizer("approx_sign"))
    one_bit = layer(x)
    assert torch.allclose(one_bit, x @ w_bin.T + layer.bias)
    model = nn.Sequential(layer)
    with binarization_level(model, 0.0):
        assert torch.allclose(layer(x), x @ w.T + layer.bias, atol=1e-6)
    with binarization_level(model, 0.25):
        assert torch.allclose(layer(x), x @ (0.75 * w + 0.25 * w_bin).T + layer.bias, atol=1e-6)
    assert torch.equal(layer(x), one_bit)  # back at level 1 after the block


def test_an_embedding_is_float_at_level_zero_and_unchanged_at_one():
    torch.manual_seed(0)
    table = BinaryEmbedding(10, 6, output_scale=2.0)
    ids = torch.tensor([[1, 4, 9]])
    rows = table.weight.detach()[ids]
    expected = rows.abs().mean(-1, keepdim=True) * 2.0 * rows.sign()
    assert torch.equal(table(ids), expected)
    with binarization_level(table, 0.0):
        assert torch.allclose(table(ids), rows * 2.0)


def test_the_level_goes_back_to_one_when_a_step_raises():
    layer = BinaryLinear(4, 4)
    with pytest.raises(KeyboardInterrupt), binarization_level(layer, 0.5):
        assert layer.binarization_level == 0.5
        raise KeyboardInterrupt
    assert layer.binarization_level == 1.0


def test_training_steps_follow_the_ramp_and_the_model_is_left_one_bit(tiny_bert_dir, tmp_path, monkeypatch):
    seen = []
    real = trainer_module.binarization_level

    def recording(model, level):
        seen.append(level)
        return real(model, level)

    monkeypatch.setattr(trainer_module, "binarization_level", recording)
    out = tmp_path / "run"
    argv = ["train", "--task", "sst2", "--data-dir", str(FIXTURES), "--init", str(tiny_bert_dir), "--output",
            str(out), "--max-steps", "6", "--batch-size", "2", "--holdout", "0.3", "--binarize-ramp", "0.5",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert seen == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0])


def test_the_ramp_is_an_init_default_but_runs_saved_before_it_resume_without_it(tmp_path):
    from beexformer.training.arguments import TrainingArguments

    assert TrainingArguments(init="minilm").validate().binarize_ramp == 0.3
    assert TrainingArguments().validate().binarize_ramp == 0.0  # from scratch there is no float start to keep
    saved = TrainingArguments(init="minilm").validate().to_dict()
    del saved["binarize_ramp"]  # a run.json written before the field existed
    (tmp_path / "run.json").write_text(json.dumps(saved))
    assert TrainingArguments.load(tmp_path / "run.json").validate().binarize_ramp == 0.0


def test_the_report_says_how_its_runs_met_their_one_bit_weights():
    from beexformer.report.render_pretrained import _ramp_sentence

    old = {"training_arguments": {"init": "minilm"}}
    assert "from the first step" in _ramp_sentence([old])
    ramped = {"training_arguments": {"init": "minilm", "binarize_ramp": 0.3}}
    assert "first step or blended in from float over the first 30% of the steps" in _ramp_sentence([old, ramped])
