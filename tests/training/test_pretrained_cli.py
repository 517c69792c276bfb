"""`beex train --init` end to end on a tiny random BERT written by the test: train, eval, export, predict at
W1A32 and W1A1; the packed file answers as the PyTorch model does; bad --init directories give one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from beexformer.cli.main import main

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
SENTENCES = ["not bad at all", "a dull film", "it is a good movie"]


@pytest.fixture(scope="module", params=[32, 1], ids=["W1A32", "W1A1"])
def init_run(request, tiny_bert_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / f"sst2-a{request.param}"
    code = main(["train", "--task", "sst2", "--data-dir", str(FIXTURES), "--init", str(tiny_bert_dir),
                 "--output", str(out), "--max-steps", "4", "--batch-size", "2", "--holdout", "0.3",
                 "--act-bits", str(request.param), "--set", "exit_hidden=8", "--no-progress"])  # fmt: skip
    assert code == 0
    return out


def test_run_records_the_checkpoint_and_a_heldout_threshold(init_run, tiny_bert_dir):
    config = json.loads((init_run / "best" / "config.json").read_text())
    assert (config["d_model"], config["n_blocks"], config["position"], config["ffn"]) == (32, 2, "learned", "ffn")
    assert config["tokenizer_kind"] == "vocab" and config["layer_norm_eps"] == 1e-12
    run = json.loads((init_run / "run.json").read_text())
    assert run["init"] == str(tiny_bert_dir) and run["lr"] == 1e-4 and run["head_lr"] == 1e-3 and run["holdout"] == 0.3
    log = [json.loads(line) for line in (init_run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4 and "heldout_metric_no_exit" in log[-1]
    task = json.loads((init_run / "best" / "task.json").read_text())
    assert task["exit_threshold"] is not None and log[-1]["exit_rule"].startswith(task["exit_rule"])


def test_eval_export_and_predict_agree(init_run, tmp_path, capsys):
    report_path = tmp_path / "eval.json"
    assert main(["eval", str(init_run), "--data-dir", str(FIXTURES), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["n_samples"] == 6 and len(report["metric_per_exit"]) == 2
    packed = tmp_path / "m.beex"
    assert main(["export", str(init_run), "--out", str(packed)]) == 0
    capsys.readouterr()
    answers = []
    for model in (init_run, packed):
        assert main(["predict", str(model), *SENTENCES]) == 0
        answers.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    torch_answers, packed_answers = answers
    assert len(torch_answers) == len(SENTENCES)
    for a, b in zip(torch_answers, packed_answers, strict=True):
        assert (a["label"], a["exit_block"]) == (b["label"], b["exit_block"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "config.json: not found"),
        (lambda d: (d / "config.json").write_text('{"model_type": "llama"}'), "model_type 'llama'"),
        (lambda d: (d / "vocab.txt").unlink(), "vocab.txt: not found"),
    ],
)
def test_bad_init_directory_gives_one_line_error(tiny_bert_dir, tmp_path, capsys, damage, message):
    directory = Path(shutil.copytree(tiny_bert_dir, tmp_path / "ckpt"))
    damage(directory)
    argv = ["train", "--task", "sst2", "--data-dir", str(FIXTURES), "--init", str(directory),
            "--output", str(tmp_path / "run"), "--max-steps", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_train_help_states_the_start_dependent_defaults():
    import re

    from beexformer.cli.main import build_parser
    from beexformer.training.arguments import FROM_SCRATCH, PRETRAINED

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    stated = set()
    for action in train._actions:
        match = re.search(r"\(default: ([-+.\deE]+|--lr)(?: = [^;]*)?; ([-+.\deE]+) with --init\)", action.help or "")
        if match:
            scratch = None if match.group(1) == "--lr" else float(match.group(1))
            assert scratch == FROM_SCRATCH[action.dest], action.option_strings
            assert float(match.group(2)) == PRETRAINED[action.dest], action.option_strings
            stated.add(action.dest)
    assert stated == set(FROM_SCRATCH) == set(PRETRAINED)


@pytest.mark.parametrize("ramp", [[], ["--binarize-ramp", "1"]], ids=["one-bit", "ramped"])
def test_an_init_run_resumed_from_its_last_checkpoint_ends_with_the_same_weights(tiny_bert_dir, tmp_path, ramp):
    from safetensors.torch import load_file

    out = tmp_path / "run"  # ramped: killed mid-ramp, the level must come back from the step
    argv = ["train", "--task", "sst2", "--data-dir", str(FIXTURES), "--init", str(tiny_bert_dir), "--output",
            str(out), "--max-steps", "6", "--batch-size", "2", "--holdout", "0.3", "--no-progress", *ramp]  # fmt: skip
    assert main(argv) == 0
    final = out / "checkpoints" / "ckpt-000006"
    reference = load_file(str(final / "model" / "model.safetensors"))
    shutil.rmtree(final)  # as if the process died after the checkpoint of step 4
    assert main(["train", "--resume", "--output", str(out), "--no-progress"]) == 0
    resumed = load_file(str(final / "model" / "model.safetensors"))
    assert reference.keys() == resumed.keys()
    for name, tensor in reference.items():
        assert (tensor == resumed[name]).all(), name
