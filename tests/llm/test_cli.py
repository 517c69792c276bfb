"""`beex llm` command line: help, fast import, one-line user errors, and the prompt sets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from beexformer.cli.main import main

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, beexformer.cli.llm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("command", ["analyze", "train-heads", "calibrate", "generate"])
def test_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["llm", command, "--help"])
    assert exit_info.value.code == 0
    assert "example" in capsys.readouterr().out


def test_generate_without_heads_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["llm", "generate", "--mode", "early-exit", "--prompt", "x", "--model", "/nonexistent/model"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot load model" in err


def test_missing_prompt_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["llm", "generate"]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_eval_train_and_calibration_prompts_are_disjoint() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from llm_prompts import CALIB_PROMPTS, EVAL_PROMPTS, TRAIN_PROMPTS
    finally:
        sys.path.remove(str(BENCH))
    assert len(EVAL_PROMPTS) == 20
    lists = [{p.lower() for p in prompts} for prompts in (EVAL_PROMPTS, TRAIN_PROMPTS, CALIB_PROMPTS)]
    assert sum(len(s) for s in lists) == len(set().union(*lists))


def test_train_heads_refuses_to_overwrite_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "heads.safetensors"
    (tmp_path / "heads.safetensors.ckpt.pt").write_bytes(b"x")
    assert main(["llm", "train-heads", "--text", "t.txt", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
