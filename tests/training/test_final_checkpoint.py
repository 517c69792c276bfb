"""The last checkpoint carries the exit threshold of the last held-out evaluation, also when the final step
is a checkpoint step (it used to be written before that evaluation, with the threshold of the one before)."""

from __future__ import annotations

import json
from pathlib import Path

from beexformer.cli.main import main
from beexformer.training import checkpoint as ckpt

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"


def test_final_checkpoint_has_the_threshold_chosen_at_the_end(tiny_bert_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--task", "sst2", "--data-dir", str(FIXTURES), "--init", str(tiny_bert_dir),
                 "--output", str(out), "--max-steps", "3", "--save-every", "3", "--batch-size", "1",
                 "--holdout", "0.3", "--set", "exit_hidden=8", "--no-progress"])  # fmt: skip
    assert code == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # 4 training examples after the held-out slice: step 3 ends no epoch, so the only evaluation is the one
    # after the last step, and the best model is the last one
    assert [entry["step"] for entry in log] == [3]
    best = json.loads((out / "best" / "task.json").read_text())
    last = ckpt.latest_checkpoint(out / "checkpoints")
    assert last.name == ckpt.checkpoint_name(3)
    final = json.loads((last / "model" / "task.json").read_text())
    assert (final["exit_rule"], final["exit_threshold"]) == (best["exit_rule"], best["exit_threshold"])


def test_a_resumed_run_keeps_the_threshold_its_checkpoint_holds(tiny_bert_dir, tmp_path):
    """Resuming used to start from the rule's default threshold, so that a checkpoint written before the next
    held-out evaluation (here: the run resumed when already complete) lost the chosen one."""
    out = tmp_path / "run"
    code = main(["train", "--task", "sst2", "--data-dir", str(FIXTURES), "--init", str(tiny_bert_dir),
                 "--output", str(out), "--max-steps", "3", "--save-every", "3", "--batch-size", "1",
                 "--holdout", "0.3", "--set", "exit_hidden=8", "--no-progress"])  # fmt: skip
    assert code == 0
    task_json = ckpt.latest_checkpoint(out / "checkpoints") / "model" / "task.json"
    info = json.loads(task_json.read_text())
    info["exit_threshold"] = 0.3  # a grid value other than the default 0.05, as if the held-out slice chose it
    task_json.write_text(json.dumps(info))
    assert main(["train", "--resume", "--output", str(out), "--no-progress"]) == 0
    resumed = json.loads((ckpt.latest_checkpoint(out / "checkpoints") / "model" / "task.json").read_text())
    assert (resumed["exit_rule"], resumed["exit_threshold"]) == ("fractional_entropy", 0.3)
