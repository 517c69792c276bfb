"""A training run killed with SIGKILL in the middle of an epoch resumes from its last checkpoint, and the
resumed run ends with exactly the weights of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from beexformer.training import checkpoint as ckpt

TINY = ["--set", "d_model=32", "--set", "d_ff=64", "--set", "n_heads=2", "--set", "n_blocks=2",
        "--set", "exit_hidden=8", "--vocab-size", "500", "--max-len", "32", "--no-progress"]  # fmt: skip


def train_cmd(glue_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "beexformer.cli.main", "train", "--task", "sst2",
            "--data-dir", str(glue_dir), "--output", str(out), "--max-train-samples", "3000",
            "--batch-size", "8", "--epochs", "2",
            "--save-every", "25", "--threads", "1", "--seed", "7", *TINY, *extra]  # fmt: skip


def weights(run: Path) -> dict:
    return load_file(str(ckpt.latest_checkpoint(run / "checkpoints") / "model" / "model.safetensors"))


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path.name} appeared"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def uninterrupted(glue_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    subprocess.run(train_cmd(glue_dir, out), check=True, capture_output=True)
    return out


def test_sigkill_mid_epoch_then_resume_loses_nothing(glue_dir, tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(glue_dir, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(out / "checkpoints" / "ckpt-000050", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((ckpt.latest_checkpoint(out / "checkpoints") / "trainer_state.json").read_text())
    steps_per_epoch = 375
    assert 50 <= state["step"] < 2 * steps_per_epoch and state["batch_in_epoch"] % steps_per_epoch != 0
    # every checkpoint left behind is complete and loadable
    for path in ckpt.list_checkpoints(out / "checkpoints"):
        assert ckpt.is_complete(path)
        load_file(str(path / "model" / "model.safetensors"))

    resumed = subprocess.run(train_cmd(glue_dir, out, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((ckpt.latest_checkpoint(out / "checkpoints") / "trainer_state.json").read_text())
    assert final["step"] == 2 * steps_per_epoch and final["epoch"] == 2
    assert (out / "best" / "model.safetensors").is_file()
    reference, mine = weights(uninterrupted), weights(out)
    assert reference.keys() == mine.keys()
    for name in reference:
        assert (reference[name] == mine[name]).all(), f"{name} differs from the uninterrupted run"


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(glue_dir, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(glue_dir, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "checkpoints" / "ckpt-000025", proc)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "--resume" in err and "Traceback" not in err
    state = json.loads((ckpt.latest_checkpoint(out / "checkpoints") / "trainer_state.json").read_text())
    assert state["step"] >= 25


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    root = tmp_path / "checkpoints"

    def fill_ok(d: Path) -> None:
        (d / "model").mkdir()
        (d / "model" / "model.safetensors").write_bytes(b"x")
        (d / "state").mkdir()
        (d / ckpt.STATE_FILE).write_text('{"step": 1}')

    good = ckpt.write_directory_atomically(root / ckpt.checkpoint_name(1), fill_ok)
    ckpt.publish_checkpoint(root, good)
    # a crash while writing step 2: only the temporary directory exists
    tmp = ckpt.begin_directory(root / ckpt.checkpoint_name(2))
    (tmp / ckpt.STATE_FILE).write_text('{"step": 2')
    assert ckpt.latest_checkpoint(root) == good
    # LATEST pointing at a broken directory falls back to the newest complete one
    broken = root / ckpt.checkpoint_name(3)
    broken.mkdir()
    (broken / ckpt.STATE_FILE).write_text("{")
    (root / ckpt.LATEST).write_text(broken.name)
    assert ckpt.latest_checkpoint(root) == good
