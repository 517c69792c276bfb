"""Staged training (training/staged.py): float -> A4 -> A2 -> A1 in one command, killed and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from beexformer.cli.main import main
from beexformer.config import BEExformerConfig
from beexformer.errors import ConfigError
from beexformer.model import BEExformer
from beexformer.quantizers import ActivationQuantizer
from beexformer.training.staged import parse_stages, stage_overrides
from beexformer.training.warm_start import start_from

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
SRC = Path(__file__).resolve().parents[2] / "src"
TINY = ["--set", "d_model=32", "--set", "d_ff=64", "--set", "n_heads=2", "--set", "n_blocks=3",
        "--set", "exit_hidden=8", "--vocab-size", "200", "--no-progress", "--batch-size", "2"]  # fmt: skip


def test_staged_run_is_killed_between_stages_and_resumes_without_redoing_the_done_ones(tmp_path, capsys):
    out = tmp_path / "staged"
    argv = [sys.executable, "-m", "beexformer.cli.main", "train", "--task", "rte", "--data-dir", str(FIXTURES),
            "--output", str(out), "--stages", "float,a4,a2,a1", "--max-steps", "2",
            *TINY]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "a4" / "stage.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # between stages, or early in a2: no chance to save anything
    finally:
        proc.wait()
    assert (out / "a4" / "stage.json").is_file(), "the run died before its second stage"
    assert not (out / "stages.json").exists(), "the run finished before the kill: nothing was resumed"
    before = {name: (out / name / "stage.json").read_text() for name in ("float", "a4")}
    weights_mtime = (out / "a4" / "best" / "model.safetensors").stat().st_mtime_ns

    assert main(["train", "--resume", "--output", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "stage float: done before" in printed and "stage a4: done before" in printed
    assert {name: (out / name / "stage.json").read_text() for name in ("float", "a4")} == before
    assert (out / "a4" / "best" / "model.safetensors").stat().st_mtime_ns == weights_mtime

    stages = json.loads((out / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["float", "a4", "a2", "a1"]
    assert all(s["steps"] == 2 and s["minutes"] >= 0 and s["cpu_minutes"] > 0 for s in stages)
    assert stages[0]["teacher"] is None and stages[0]["started_from"] is None
    for previous, stage in zip(stages, stages[1:], strict=False):
        assert stage["teacher"] == stage["started_from"] == str(out / previous["stage"])
    configs = {s["stage"]: BEExformer.from_pretrained(out / s["stage"] / "best").config for s in stages}
    assert (configs["float"].weight_bits, configs["float"].act_bits) == (32, 32)
    assert [(configs[n].weight_bits, configs[n].act_bits) for n in ("a4", "a2", "a1")] == [(1, 4), (1, 2), (1, 1)]
    assert configs["a1"].act_binarizer == "elastic"
    assert "CPU min" in printed  # the per-stage table


def test_a_stage_starts_from_the_previous_weights_with_fresh_activation_quantizers(tmp_path):
    shape = dict(vocab_size=60, d_model=32, n_heads=2, d_ff=64, n_blocks=2)
    torch.manual_seed(0)
    previous = BEExformer(BEExformerConfig(**stage_overrides("a4", shape)))
    ids = torch.randint(5, 60, (4, 9))
    previous(ids)  # initialises the 4-bit quantizers from a batch
    previous.save_pretrained(tmp_path / "a4" / "best")
    student = BEExformer(BEExformerConfig(**stage_overrides("a2", shape)))
    start_from(student, tmp_path / "a4")
    theirs = previous.state_dict()
    for key, value in student.state_dict().items():
        if ".input_quantizer." not in key:
            assert torch.equal(value, theirs[key]), key
    quantizers = [m for m in student.modules() if isinstance(m, ActivationQuantizer)]
    assert quantizers and not any(bool(q.initialized) for q in quantizers)
    wider = BEExformer(BEExformerConfig(**stage_overrides("a2", {**shape, "d_model": 64})))
    with pytest.raises(ConfigError, match="do not fit"):
        start_from(wider, tmp_path / "a4")


def test_stage_lists_are_checked():
    assert parse_stages("float, A4,a2,a1") == ["float", "a4", "a2", "a1"]
    for bad in ("a1,a4", "float,a3", "a4,a4", ""):
        with pytest.raises(ConfigError, match="--stages"):
            parse_stages(bad)


@pytest.mark.parametrize("stages", [["float", "a4", "a2", "a1"], ["a4", "a1"]])
def test_only_the_first_one_bit_stage_ramps_in_from_float_weights(tmp_path, stages):
    from beexformer.training.arguments import TrainingArguments
    from beexformer.training.staged import StagedRun

    run = StagedRun(tmp_path, TrainingArguments(init="minilm"), stages)
    ramps = [run.stage_arguments(name, None).validate().binarize_ramp for name in stages]
    first = 1 if stages[0] == "float" else 0  # the float stage has no 1-bit layer: its ramp does nothing
    assert ramps[first] == 0.3 and all(r == 0.0 for r in ramps[first + 1 :])


def test_staged_run_without_float_stage_needs_a_teacher(tmp_path, capsys):
    code = main(["train", "--task", "rte", "--data-dir", str(FIXTURES), "--output", str(tmp_path / "s"),
                 "--stages", "a4,a1", *TINY])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "needs --teacher" in err and len(err.splitlines()) == 1


def test_staged_run_from_a_pretrained_checkpoint(tiny_bert_dir, tmp_path, capsys):
    """--init applies to every stage: the float stage fine-tunes the checkpoint, the W1A4 stage starts from it
    with the same vocabulary (the teacher check passes) and a held-out slice picks both best models."""
    out = tmp_path / "staged"
    code = main(["train", "--task", "sst2", "--data-dir", str(FIXTURES), "--init", str(tiny_bert_dir), "--output",
                 str(out), "--stages", "float,a4", "--max-steps", "2", "--batch-size", "2", "--holdout", "0.3",
                 "--set", "exit_hidden=8", "--no-progress"])  # fmt: skip
    assert code == 0
    stages = json.loads((out / "stages.json").read_text())
    assert [s["stage"] for s in stages] == ["float", "a4"] and stages[1]["teacher"] == str(out / "float")
    student = BEExformer.from_pretrained(out / "a4" / "best")
    assert (student.config.position, student.config.ffn, student.config.act_bits) == ("learned", "ffn", 4)
    unsigned = {n for n, m in student.named_modules() if isinstance(m, ActivationQuantizer) and not m.signed}
    assert unsigned and all(n.endswith("lin2.input_quantizer") for n in unsigned)
    assert all(bool(m.initialized) for m in student.modules() if isinstance(m, ActivationQuantizer))


def test_a_schedule_continues_from_a_finished_run_which_starts_and_teaches_its_first_stage(tmp_path):
    a4 = tmp_path / "a4-run"
    common = ["--task", "rte", "--data-dir", str(FIXTURES), "--max-steps", "2", *TINY]
    assert main(["train", *common, "--output", str(a4), "--set", "act_bits=4"]) == 0
    out = tmp_path / "staged"
    assert main(["train", *common, "--output", str(out), "--stages", "a2", "--start-from", str(a4)]) == 0
    (stage,) = json.loads((out / "stages.json").read_text())
    assert stage["teacher"] == stage["started_from"] == str(a4)
    # two steps move the weights a little; a stage that ignored --start-from would start from a fresh draw
    theirs = BEExformer.from_pretrained(a4 / "best").state_dict()
    ours = BEExformer.from_pretrained(out / "a2" / "best")
    assert ours.config.act_bits == 2
    embedding = next(k for k in theirs if "embed" in k and k.endswith("weight"))
    assert (ours.state_dict()[embedding] - theirs[embedding]).abs().max() < 0.05
    assert json.loads((out / "a2" / "run.json").read_text())["binarize_ramp"] == 0.0


def test_a_plain_run_starts_from_a_finished_run_with_other_activation_bits(tmp_path):
    """BiT's weights first: W1A32 trained, then a W1A4 run that starts from its weights (taught by nobody here)."""
    common = ["--task", "rte", "--data-dir", str(FIXTURES), "--max-steps", "2", *TINY]
    w1a32 = tmp_path / "w1a32"
    assert main(["train", *common, "--output", str(w1a32)]) == 0
    out = tmp_path / "w1a4"
    assert main(["train", *common, "--output", str(out), "--set", "act_bits=4", "--start-from", str(w1a32)]) == 0
    saved = json.loads((out / "run.json").read_text())
    assert saved["start_from"] == str(w1a32) and saved["binarize_ramp"] == 0.0 and saved["teacher"] is None
    theirs = BEExformer.from_pretrained(w1a32 / "best").state_dict()
    ours = BEExformer.from_pretrained(out / "best")
    assert ours.config.act_bits == 4
    fresh = BEExformer(ours.config).state_dict()  # what a run that ignored --start-from would start near
    embedding = next(k for k in theirs if "embed" in k and k.endswith("weight"))
    assert (ours.state_dict()[embedding] - theirs[embedding]).abs().max() < 0.05
    assert (fresh[embedding] - theirs[embedding]).abs().max() > 0.05


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--start-from", "nowhere"], "no finished run there"),
        (["--stages", "a2", "--start-from", "nowhere"], "no finished run there"),
        (["--stages", "float,a2", "--start-from", "nowhere"], "drop the float stage"),
    ],
)
def test_start_from_is_checked_in_one_line(tmp_path, capsys, extra, message):
    code = main(["train", "--task", "rte", "--data-dir", str(FIXTURES), "--output", str(tmp_path / "s"),
                 *extra, *TINY])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
