"""`--carry`: a report continued on another machine keeps the runs of an earlier session that match its plan
exactly, and trains again what does not match or what a student still needs as its teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beexformer.report.main import main
from beexformer.report.plan import RunSpec, profile_settings
from beexformer.report.runner import run_plan

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
TRAINING = {"max_steps": 2, "batch_size": 4, "max_len": 32, "vocab_size": 120}
SMALL = {"d_model": 32, "n_heads": 2, "d_ff": 32, "n_blocks": 2, "exit_hidden": 8}
FLOAT = {**SMALL, "weight_bits": 32, "act_bits": 32, "embedding_bits": 32, "exit_bits": 32}


def _settings():
    settings = profile_settings("ci", ("sst2",))
    settings.measure_latency = False
    return settings


def _run(plan: list[RunSpec], work: Path, out: Path, carry: dict | None = None) -> dict:
    run_plan(_settings(), plan, str(FIXTURES), work, out, {}, log=lambda m: None, carry=carry)
    return json.loads(out.read_text())


def test_matching_runs_are_carried_and_a_needed_teacher_trains_again(tmp_path: Path):
    teacher = RunSpec("main", "sst2", "float32", 1, FLOAT, TRAINING)
    student = RunSpec("main", "sst2", "W1A32 + KD", 1, SMALL, TRAINING, teacher=teacher.run_id)
    first = _run([teacher, student], tmp_path / "a", tmp_path / "a.json")

    # another machine: no run directories, the earlier JSON only; nothing is trained again
    again = _run([teacher, student], tmp_path / "b", tmp_path / "b.json", carry=first)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    assert again["complete"] is True
    for run_id, record in first["runs"].items():
        assert again["runs"][run_id]["carried"] is True
        assert again["runs"][run_id]["metric_no_exit"] == record["metric_no_exit"]

    # a new student of the carried teacher: the teacher trains again (its weights are needed), the other
    # student stays carried
    w1a1 = RunSpec("main", "sst2", "W1A1 + KD", 1, {**SMALL, "act_bits": 1}, TRAINING, teacher=teacher.run_id)
    third = _run([teacher, student, w1a1], tmp_path / "c", tmp_path / "c.json", carry=first)
    trained_here = {p.name for p in (tmp_path / "c").iterdir() if (p / "done.json").is_file()}
    assert trained_here == {teacher.run_id, w1a1.run_id}
    assert third["runs"][student.run_id]["carried"] is True
    assert "carried" not in third["runs"][teacher.run_id]


def test_a_run_trained_with_other_arguments_is_not_carried(tmp_path: Path):
    spec = RunSpec("main", "sst2", "W1A32", 1, SMALL, TRAINING)
    first = _run([spec], tmp_path / "a", tmp_path / "a.json")
    # as if the trainer's defaults had changed since (the binarization ramp did): the run is another run now
    first["runs"][spec.run_id]["training_arguments"]["binarize_ramp"] = 0.5
    again = _run([spec], tmp_path / "b", tmp_path / "b.json", carry=first)
    assert "carried" not in again["runs"][spec.run_id]
    assert (tmp_path / "b" / spec.run_id / "done.json").is_file()


def test_carry_from_an_unreadable_file_fails_in_one_line_before_any_work(tmp_path: Path, capsys):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    argv = ["--profile", "ci", "--data-dir", str(FIXTURES), "--out", str(tmp_path / "o"), "--carry", str(bad)]
    assert main([*argv, "--work-dir", str(tmp_path / "w"), "--docs", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --carry {bad}: cannot read a results JSON")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("content", ['{"runs": []}', "[]"])
def test_carry_of_a_json_that_is_not_a_report_is_refused(tmp_path: Path, capsys, content: str):
    bad = tmp_path / "results.json"
    bad.write_text(content)
    argv = ["--profile", "ci", "--data-dir", str(FIXTURES), "--out", str(tmp_path / "o"), "--carry", str(bad)]
    assert main([*argv, "--work-dir", str(tmp_path / "w"), "--docs", str(tmp_path / "r.md")]) == 2
    assert "not a results JSON of benchmarks/reproduce.py" in capsys.readouterr().err


def test_train_only_trains_the_matching_runs_and_their_teachers_and_reports_the_whole_plan(tmp_path: Path):
    teacher = RunSpec("main", "sst2", "float32", 1, FLOAT, TRAINING)
    plain = RunSpec("main", "sst2", "W1A32", 1, SMALL, TRAINING)
    student = RunSpec("main", "sst2", "W1A32 + KD", 1, SMALL, TRAINING, teacher=teacher.run_id)
    plan = [teacher, plain, student]
    out = tmp_path / "r.json"
    run_plan(_settings(), plan, str(FIXTURES), tmp_path / "w", out, {}, log=lambda m: None, train_only=["*-kd-*"])
    results = json.loads(out.read_text())
    assert set(results["runs"]) == {teacher.run_id, student.run_id}
    assert results["plan"] == [s.run_id for s in plan] and results["complete"] is False


def test_train_only_pattern_that_matches_nothing_fails_in_one_line(tmp_path: Path, capsys):
    argv = ["--profile", "ci", "--data-dir", str(FIXTURES), "--out", str(tmp_path / "o"), "--train-only", "x-*"]
    assert main([*argv, "--work-dir", str(tmp_path / "w"), "--docs", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --train-only x-*: matches no run of the plan (see --plan-only)"]
    assert not (tmp_path / "w").exists()


def test_runs_finished_in_the_work_dir_are_collected_before_the_others_train(tmp_path: Path):
    first = RunSpec("main", "sst2", "W1A32", 1, SMALL, TRAINING)
    second = RunSpec("main", "sst2", "W1A1", 1, {**SMALL, "act_bits": 1}, TRAINING)
    out, work = tmp_path / "r.json", tmp_path / "w"
    run_plan(_settings(), [first, second], str(FIXTURES), work, out, {}, log=lambda m: None, train_only=["*-w1a1-*"])
    order: list[str] = []
    log = lambda m: order.append(m.split(": ")[1]) if m.startswith("run ") else None  # noqa: E731
    run_plan(_settings(), [first, second], str(FIXTURES), work, out, {}, log=log)
    assert order == [second.run_id, first.run_id]


def test_a_distilled_pretrained_run_is_compared_with_the_distilled_defaults():
    """Whether a run has a teacher sets its defaults (10 epochs with --init): a distilled record made with
    today's defaults is the same run, one made with the 3-epoch default of before is not."""
    from beexformer.report.runner import _same_training
    from beexformer.training.arguments import TrainingArguments

    training = {"init": "minilm", "max_len": 128}
    student = RunSpec("main", "mrpc", "pretrained W1A32 + KD", 1, {}, training, teacher="main-mrpc-float-minilm-s1")
    made = TrainingArguments(task="mrpc", seed=1, init="minilm", max_len=128, teacher="/elsewhere/float")
    record = {"training_arguments": made.validate().to_dict()}
    assert _same_training(record, student, "glue")
    record["training_arguments"]["epochs"] = 3.0
    assert not _same_training(record, student, "glue")


def test_a_teacher_trained_again_keeps_its_record_when_the_report_stops_during_its_training(
    tmp_path: Path, monkeypatch
):
    teacher = RunSpec("main", "sst2", "float32", 1, FLOAT, TRAINING)
    student = RunSpec("main", "sst2", "W1A32 + KD", 1, SMALL, TRAINING, teacher=teacher.run_id)
    first = _run([teacher], tmp_path / "a", tmp_path / "a.json")

    def stopped(spec, *args, **kwargs):  # the session ends while the carried teacher trains again
        raise KeyboardInterrupt

    monkeypatch.setattr("beexformer.report.runner.prepare_run", stopped)
    with pytest.raises(KeyboardInterrupt):
        _run([teacher, student], tmp_path / "b", tmp_path / "b.json", carry=first)
    on_disk = json.loads((tmp_path / "b.json").read_text())
    kept = on_disk["runs"][teacher.run_id]
    assert kept["carried"] is True and kept["metric_no_exit"] == first["runs"][teacher.run_id]["metric_no_exit"]
    assert student.run_id not in on_disk["runs"]
