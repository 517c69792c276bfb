"""The `beex` command line end to end on a tiny model and the GLUE-shaped fixtures in tests/fixtures."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from beexformer.cli.main import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
TINY = ["--set", "d_model=32", "--set", "d_ff=64", "--set", "n_heads=2", "--set", "n_blocks=3",
        "--set", "exit_hidden=8", "--vocab-size", "200", "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def rte_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "rte"
    code = main(["train", "--task", "rte", "--data-dir", str(FIXTURES), "--output", str(out),
                 "--max-steps", "6", "--batch-size", "2", "--save-every", "4", *TINY])  # fmt: skip
    assert code == 0
    return out


def test_train_writes_best_model_checkpoints_and_log(rte_run):
    assert (rte_run / "best" / "model.safetensors").is_file()
    assert json.loads((rte_run / "best" / "task.json").read_text())["task"] == "rte"
    assert (rte_run / "checkpoints" / "LATEST").read_text().strip() == "ckpt-000006"
    assert (rte_run / "checkpoints" / "ckpt-000004").is_dir()
    log = [json.loads(line) for line in (rte_run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 6 and 0.0 <= log[-1]["metric_early_exit"] <= 1.0


def test_eval_json_has_metric_with_and_without_exit(rte_run, tmp_path, capsys):
    report_path = tmp_path / "rte.json"
    assert main(["eval", str(rte_run), "--data-dir", str(FIXTURES), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    for key in ("metric_early_exit", "metric_no_exit", "exit_histogram", "mean_exit_block", "flops_saved"):
        assert key in report, key
    assert report["metric"] == "accuracy" and report["n_samples"] == 6
    assert sum(report["exit_histogram"]) == 6 and len(report["exit_histogram"]) == 3
    assert 1.0 <= report["mean_exit_block"] <= 3.0
    assert "FLOPs saved" in capsys.readouterr().out


def test_eval_without_exit_rule_runs_all_blocks(rte_run, tmp_path):
    path = tmp_path / "none.json"
    main(["eval", str(rte_run), "--data-dir", str(FIXTURES), "--exit-rule", "none", "--json", str(path)])
    report = json.loads(path.read_text())
    assert report["exit_histogram"] == [0, 0, 6] and report["flops_saved"] == 0.0
    assert report["metric_early_exit"] == report["metric_no_exit"]


def test_predict_prints_one_json_line_per_input(rte_run, tmp_path, capsys):
    inputs = tmp_path / "pairs.tsv"
    inputs.write_text("A man sleeps.\tSomeone sleeps.\nIt rains.\tThe sun shines.\n")
    assert main(["predict", str(rte_run), "--file", str(inputs)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2
    for record in lines:
        assert record["label"] in ("entailment", "not_entailment")
        assert 0.5 <= record["score"] <= 1.0 and 1 <= record["exit_block"] <= 3


def test_predict_answers_every_input_line_in_order_blank_ones_too(rte_run, tmp_path, capsys):
    """Output line N answers input line N: a blank line is the empty text, not a line to skip."""
    inputs = tmp_path / "pairs.tsv"
    inputs.write_text("A man sleeps.\tSomeone sleeps.\n\nIt rains.\tThe sun shines.\r\n\n")
    packed = tmp_path / "rte.beex"
    assert main(["export", str(rte_run), "--out", str(packed)]) == 0
    capsys.readouterr()
    for model in (rte_run, packed):
        assert main(["predict", str(model), "--file", str(inputs)]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [r["input"] for r in lines] == ["A man sleeps.\tSomeone sleeps.", "", "It rains.\tThe sun shines.", ""]
        assert all(r["label"] in ("entailment", "not_entailment") for r in lines)
        assert main(["predict", str(model), ""]) == 0  # an empty argument is a text
        (record,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert record["input"] == "" and 1 <= record["exit_block"] <= 3
    assert main(["predict", str(rte_run)]) == 2
    assert "no input" in capsys.readouterr().err


def test_sweep_writes_csv_and_png(rte_run, tmp_path):
    out = tmp_path / "sweep"
    assert main(["sweep", str(rte_run), "--data-dir", str(FIXTURES), "--out", str(out)]) == 0
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["rule"] for r in rows} == {"none", "fractional_entropy", "entropy", "patience", "max_prob"}
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_table(rte_run, capsys):
    assert main(["summary", str(rte_run)]) == 0
    out = capsys.readouterr().out
    assert "1-bit params" in out and "parameter accounting" in out


def _printed_ratio(out: str) -> str:
    """The one 'size ratio N.NNx' a command prints (exactly one, or the test fails)."""
    found = re.findall(r"size ratio (\d+\.\d\d)x", out)
    assert len(found) == 1, out
    return found[0]


def test_size_ratio_is_one_number_everywhere(rte_run, tmp_path, capsys):
    """eval (PyTorch and packed), export and summary print the same size ratio: bytes of the float32
    checkpoint file over bytes of the packed file, both real files."""
    packed = tmp_path / "rte.beex"
    assert main(["export", str(rte_run), "--out", str(packed)]) == 0
    checkpoint = rte_run / "best" / "model.safetensors"
    expected = f"{checkpoint.stat().st_size / packed.stat().st_size:.2f}"
    assert _printed_ratio(capsys.readouterr().out) == expected
    report_path = tmp_path / "eval.json"
    for model in (rte_run, packed):
        assert main(["eval", str(model), "--data-dir", str(FIXTURES), "--json", str(report_path)]) == 0
        assert _printed_ratio(capsys.readouterr().out) == expected
        size = json.loads(report_path.read_text())["size"]
        assert size["float32_checkpoint_bytes"] == checkpoint.stat().st_size and size["checkpoint_measured"]
        assert size["packed_file_bytes"] == packed.stat().st_size
    for model in (rte_run, packed):
        assert main(["summary", str(model)]) == 0
        assert _printed_ratio(capsys.readouterr().out) == expected


def test_train_refuses_to_overwrite_a_run(rte_run, capsys):
    code = main(["train", "--task", "rte", "--data-dir", str(FIXTURES), "--output", str(rte_run), *TINY])
    assert code == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--task", "nosuchtask", "--data-dir", str(FIXTURES)], "nosuchtask"),
        (["train", "--task", "rte", "--data-dir", "/nonexistent/glue"], "/nonexistent/glue"),
        (["train", "--task", "rte", "--data-dir", str(FIXTURES), "--set", "colour=3"], "colour"),
        (["train", "--task", "rte", "--data-dir", str(FIXTURES), "--set", "act_bits=3"], "act_bits"),
        (["eval", "/nonexistent/run", "--data-dir", str(FIXTURES)], "/nonexistent/run"),
        (["predict", "/nonexistent/run", "text"], "/nonexistent/run"),
        (["train", "--resume", "--output", "/nonexistent/run"], "no run to resume"),
    ],
)
def test_bad_input_gives_one_line_error(argv, message, tmp_path, capsys):
    argv = [a if a != "OUT" else str(tmp_path) for a in argv]
    if argv[0] == "train" and "--output" not in argv:
        argv += ["--output", str(tmp_path / "run"), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_console_script_help_is_complete():
    for command in ("train", "eval", "predict", "sweep", "summary"):
        out = subprocess.run(
            [sys.executable, "-m", "beexformer.cli.main", command, "--help"], capture_output=True, text=True
        )
        assert out.returncode == 0
        assert "example:" in out.stdout and "beex " + command.replace("eval", "eval") in out.stdout
