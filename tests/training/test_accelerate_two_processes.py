"""The documented multi-process path, run for real: `accelerate launch` with two CPU processes (gloo) trains a
tiny model, every process takes part in the checkpoints, and exactly one best model is saved and evaluates.

`accelerate launch --cpu --num_processes 2` starts a single process in accelerate 1.x (its simple launcher
only spreads CPU work through mpirun), so the test launches as for several GPUs and asks Accelerate for the
CPU through ACCELERATE_USE_CPU, which gives DistributedType.MULTI_CPU with two ranks. About 30 s: it runs in
CI with the rest of the suite.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from beexformer.cli.main import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
TINY = ["--set", "d_model=32", "--set", "d_ff=64", "--set", "n_heads=2", "--set", "n_blocks=3",
        "--set", "exit_hidden=8", "--vocab-size", "200", "--no-progress"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_training_saves_one_model_that_evaluates(tmp_path, capsys):
    out = tmp_path / "rte"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]  # fmt: skip
    train = ["-m", "beexformer.cli.main", "train", "--task", "rte", "--data-dir", str(FIXTURES),
             "--output", str(out), "--max-steps", "4", "--batch-size", "2", "--save-every", "2", *TINY]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch + train, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # Both ranks took part: each wrote its RNG state into the (atomic) checkpoints.
    latest = out / "checkpoints" / (out / "checkpoints" / "LATEST").read_text().strip()
    assert sorted(p.name for p in (latest / "state").glob("random_states_*.pkl")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    # One best model, written once (no leftover temporary directory), equal to the checkpoint of its step.
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    best = json.loads((out / "best" / "metrics.json").read_text())["step"]
    saved = load_file(out / "best" / "model.safetensors")
    at_step = load_file(out / "checkpoints" / f"ckpt-{best:06d}" / "model" / "model.safetensors")
    assert saved.keys() == at_step.keys()
    assert all(np.array_equal(saved[k], at_step[k]) for k in saved)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2, 4]  # written by the main process only: 2 ranks x 2 samples a step

    report = tmp_path / "eval.json"
    assert main(["eval", str(out), "--data-dir", str(FIXTURES), "--json", str(report)]) == 0
    assert json.loads(report.read_text())["n_samples"] == 6
