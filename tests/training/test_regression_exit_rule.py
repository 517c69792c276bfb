"""A regression head (STS-B: one output) has entropy 0 everywhere, so an entropy rule would send every sample
out at the earliest block it may and report the largest "FLOPs saved" for nothing. train, eval and sweep
refuse such a rule in one line; the trainer selects STS-B checkpoints with score patience."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beexformer.cli.main import main
from beexformer.exits import FractionalEntropy, check_rule_fits, entropy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
TINY = ["--set", "d_model=32", "--set", "d_ff=64", "--set", "n_heads=2", "--set", "n_blocks=3",
        "--set", "exit_hidden=8", "--vocab-size", "200", "--no-progress"]  # fmt: skip


def test_entropy_rule_on_one_output_exits_everything_at_block_2():
    """Why the rule is refused: whatever the scores, entropy is 0 and the fractional rule fires at block 2."""
    scores = np.random.default_rng(0).normal(size=(50, 6, 1))
    assert np.all(entropy(scores) == 0.0)
    assert np.all(FractionalEntropy().decide(scores).exit_block == 2)


@pytest.mark.parametrize("rule", ["fractional_entropy", "entropy", "max_prob", "patience"])
def test_classification_rules_refused_on_regression(rule):
    with pytest.raises(ValueError, match="regression"):
        check_rule_fits(rule, is_regression=True)
    check_rule_fits(rule, is_regression=False)


def test_regression_rule_refused_on_classification_and_none_fits_both():
    with pytest.raises(ValueError, match="regression tasks"):
        check_rule_fits("regression_patience", is_regression=False)
    check_rule_fits("regression_patience", is_regression=True)
    check_rule_fits("none", is_regression=True)
    check_rule_fits("none", is_regression=False)


@pytest.fixture(scope="module")
def stsb_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "stsb"
    argv = ["train", "--task", "stsb", "--data-dir", str(FIXTURES), "--output", str(out), "--max-steps", "3",
            "--batch-size", "2", *TINY]  # fmt: skip
    assert main(argv) == 0
    return out


def test_trainer_selects_regression_checkpoints_with_score_patience(stsb_run):
    assert json.loads((stsb_run / "best" / "task.json").read_text())["exit_rule"] == "regression_patience"
    assert json.loads((stsb_run / "best" / "metrics.json").read_text())["exit_rule"].startswith("regression_patience")


def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_train_refuses_entropy_rule_on_stsb(tmp_path, capsys):
    argv = ["train", "--task", "stsb", "--data-dir", str(FIXTURES), "--output", str(tmp_path / "r"),
            "--exit-rule", "fractional_entropy", "--max-steps", "1", *TINY]  # fmt: skip
    assert "regression task" in _one_line_error(argv, capsys)
    assert not (tmp_path / "r" / "best").exists()


def test_eval_and_sweep_refuse_entropy_rule_on_stsb(stsb_run, tmp_path, capsys):
    data = ["--data-dir", str(FIXTURES)]
    err = _one_line_error(["eval", str(stsb_run), *data, "--exit-rule", "entropy"], capsys)
    assert "regression task" in err
    err = _one_line_error(["sweep", str(stsb_run), *data, "--rules", "max_prob", "--out", str(tmp_path)], capsys)
    assert "regression task" in err
    assert main(["eval", str(stsb_run), *data]) == 0  # the stored rule fits
    assert "regression_patience" in capsys.readouterr().out
