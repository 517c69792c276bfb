"""The reproduction report end to end on the `ci` profile (tiny model, a few steps), plus the pure parts.

The end-to-end test trains for real on ../shared/data/glue (skips off CI where the data is absent, fails under
CI=true), so it checks that every stage (plan, training, evaluation, export, latency, aggregation, markdown,
plots, --render-only, resume) fits together; it does not judge the numbers of a 6-step model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from beexformer.report.aggregate import stats
from beexformer.report.main import main
from beexformer.report.plan import ABLATION_VARIANTS, MAIN_VARIANTS, build_plan, profile_settings
from beexformer.report.runner import final_model_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = [
    "# Reproduction report",
    "## 1. The paper's headline claims against ours (default W1A32 model)",
    "## 2. All variants",
    "## 3. Latency",
    "## 4. Exit rules on the same trained models",
    "## 5. Exit-block histograms",
    "## 6. Ablations",
    "## 7. Beside the binarized-BERT peers",
    "## 8. Every run",
]


# ------------------------------------------------------------------------------------------------ pure parts


def test_stats_mean_and_sample_std():
    s = stats([0.5, 0.7, 0.9, None])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.7)
    assert s["std"] == pytest.approx(0.2)  # sample (n - 1) standard deviation
    assert (s["min"], s["max"]) == (0.5, 0.9)
    assert stats([0.4])["std"] == 0.0
    assert stats([None, math.nan])["mean"] is None


def test_size_reason_names_the_full_precision_exit_mlps_with_their_real_byte_count():
    import dataclasses

    from beexformer.config import BEExformerConfig
    from beexformer.model import BEExformer
    from beexformer.report.render import _exit_mlp_share

    config = BEExformerConfig(vocab_size=100, d_model=32, d_ff=64, n_heads=2, n_blocks=3, exit_hidden=8)
    model = BEExformer(config)
    fc1 = [t for name, t in model.state_dict().items() if name.startswith("exits.") and name.endswith("fc1.weight")]
    real_bytes = sum(4 * t.numel() for t in fc1)
    assert real_bytes == 4 * 3 * 8 * 32
    text = _exit_mlp_share({"config": dataclasses.asdict(config)}, total=10 * real_bytes)
    assert f"{real_bytes:,} bytes, 10.0 % of the file" in text and "3 exit MLPs" in text
    # binarized exits, or a record without a config: nothing to say
    assert _exit_mlp_share({"config": {**dataclasses.asdict(config), "exit_bits": 1}}, total=1000) == ""
    assert _exit_mlp_share({}, total=1000) == ""


def test_full_plan_has_three_seeds_ablations_on_two_tasks_and_reuses_identical_runs():
    settings = profile_settings("full")
    plan = build_plan(settings, ["sst2", "cola", "mrpc", "rte", "stsb", "wnli"])
    ids = [spec.run_id for spec in plan]
    assert len(ids) == len(set(ids))
    main_runs = [s for s in plan if s.group == "main"]
    assert len(main_runs) == 6 * 3 * len(MAIN_VARIANTS)
    ablations = [s for s in plan if s.group == "ablation"]
    assert {s.task for s in ablations} == {"sst2", "rte"}
    assert len(ablations) == 2 * 3 * len(ABLATION_VARIANTS)
    # RTE ablations have the main budget, so their baseline is the main W1A32 run, trained once; SST-2
    # ablations run on a quarter of the data and train their own baseline
    baselines = [s for s in ablations if s.variant == "W1A32"]
    assert all(s.same_as == f"main-rte-w1a32-s{s.seed}" for s in baselines if s.task == "rte")
    assert all(s.same_as is None for s in baselines if s.task == "sst2")
    assert all(s.training["max_train_samples"] == 16384 for s in ablations if s.task == "sst2")
    assert all(s.same_as is None for s in ablations if s.variant != "W1A32")
    assert {s.training["epochs"] for s in plan if s.task == "rte"} == {10.0}


def test_quick_plan_has_three_seeds_on_small_tasks_and_ablations_on_sst2_and_cola():
    settings = profile_settings("quick")
    plan = build_plan(settings, ["sst2", "cola", "rte"])
    assert {s.seed for s in plan if s.task == "sst2"} == {1}
    assert {s.seed for s in plan if s.task in ("cola", "rte")} == {1, 2, 3}
    assert {s.training["epochs"] for s in plan if s.task == "rte"} == {2.0}
    ablations = [s for s in plan if s.group == "ablation"]
    assert {s.task for s in ablations} == {"sst2", "cola"}
    # SST-2 ablations run on a quarter of the data and train their own baseline; CoLA's reuse the main run
    sst2 = [s for s in ablations if s.task == "sst2"]
    assert all(s.training["max_train_samples"] == 16384 and s.same_as is None for s in sst2)
    cola_baselines = [s for s in ablations if s.task == "cola" and s.variant == "W1A32"]
    assert [s.same_as for s in cola_baselines] == [f"main-cola-w1a32-s{seed}" for seed in (1, 2, 3)]
    float_run = next(s for s in plan if s.variant == "float32")
    assert float_run.model["weight_bits"] == 32 and float_run.model["embedding_bits"] == 32
    # latency: binarized main runs of the first seed only
    timed = {s.run_id for s in plan if settings.measures_latency(s)}
    assert timed == {f"main-{t}-{v}-s1" for t in ("sst2", "cola", "rte") for v in ("w1a32", "w1a1")}


def test_tasks_without_files_are_left_out_with_a_reason(tmp_path):
    from beexformer.report.plan import available_tasks

    (tmp_path / "RTE").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "RTE" / name).write_text("index\tsentence1\tsentence2\tlabel\n")
    present, missing = available_tasks(tmp_path, ("rte", "qqp"))
    assert present == ["rte"]
    assert "QQP" in missing["qqp"] and "train.tsv" in missing["qqp"]


# ------------------------------------------------------------------------------------------------ end to end


def test_ci_profile_end_to_end(glue_dir: Path, tmp_path: Path):
    out, docs, work = tmp_path / "out", tmp_path / "docs" / "results.md", tmp_path / "runs"
    argv = ["--profile", "ci", "--data-dir", str(glue_dir), "--out", str(out), "--docs", str(docs)]
    argv += ["--work-dir", str(work)]
    assert main([*argv, "--jobs", "2"]) == 0  # worker processes; the re-run below goes through one process

    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True
    assert results["tasks"] == ["sst2", "stsb"]
    assert set(results["runs"]) == set(results["plan"])
    for run_id, r in results["runs"].items():
        spec = r["spec"]
        # every number sits next to the knobs that made it
        assert r["config"]["d_model"] == 32 and r["config"]["n_blocks"] == 3
        assert r["training_arguments"]["seed"] == spec["seed"] == 1
        assert r["training_arguments"]["max_steps"] == 6
        assert r["train_minutes"] > 0 and r["eval_minutes"] > 0
        assert 0 < r["train_cpu_minutes"] < 2 * r["train_minutes"] + 1  # one thread: CPU at most ~ wall
        assert r["n_dev"] == 160
        assert sum(r["exit_histogram"]) == r["n_dev"]
        assert 1 <= r["mean_exit_block"] <= 3
        assert 0 <= r["flops_saved"] <= r["flops_saved_cap_block2"] + 1e-9 or spec["task"] == "stsb"
        if spec["task"] == "sst2":
            assert (r["exit_rule"], r["exit_threshold"]) == ("fractional_entropy", 0.05)
            assert set(r["rules"]) == {"fractional_entropy", "entropy", "patience", "max_prob"}
            assert 0 <= r["metric_no_exit"] <= 1
        else:
            assert (r["exit_rule"], set(r["rules"])) == ("regression_patience", {"regression_patience"})
        assert any(row["rule"] == "none" for row in r["sweep"])
        if spec["variant"] == "float32":
            assert r["size"]["size_ratio"] == 1.0 and "latency" not in r
        else:
            size = r["size"]
            assert size["packed_bytes"] > 0
            assert size["size_ratio"] == pytest.approx(size["float32_checkpoint_bytes"] / size["packed_bytes"])
            assert size["size_ratio"] > 2
            # the packed runtime answers like PyTorch on the same dev samples
            assert r["packed_max_abs_logit_diff"] < 1e-3
            if spec["group"] == "main":
                for batch, n in (("1", 8), ("64", 16)):
                    assert r["latency"]["batches"][batch]["n_samples"] == n
                    assert all(v > 0 for v in r["latency"]["batches"][batch]["ms_per_sample"].values())
            elif not r.get("reused_from"):
                assert "latency" not in r
            assert not (work / run_id / "model.beex").exists()
    # the bars every result is set against, on the same 200 train and 160 dev samples as the runs
    assert set(results["baselines"]) == {"sst2", "stsb"}
    assert results["baselines"]["stsb"]["trivial"]["value"] == 0.0
    assert results["baselines"]["sst2"]["tfidf"]["n_train"] == 200
    assert results["baselines"]["sst2"]["trivial"]["n_dev"] == 160
    reused = results["runs"]["ablation-sst2-w1a32-s1"]
    assert reused["reused_from"] == "main-sst2-w1a32-s1"
    assert reused["metric_no_exit"] == results["runs"]["main-sst2-w1a32-s1"]["metric_no_exit"]
    agg = results["aggregate"]
    assert agg["main|sst2|W1A32"]["seeds"] == [1]
    assert agg["ablation|sst2|pre-LN"]["metric_early_exit"]["n"] == 1

    markdown = docs.read_text()
    positions = [markdown.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions), [s for s, p in zip(SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert "CI profile" in markdown
    assert "Where a goal is not reached, and why" in markdown
    trivial = 100 * results["baselines"]["sst2"]["trivial"]["value"]
    assert f"| SST-2 | accuracy | 1 | {trivial:.2f} |" in markdown
    assert "† not above the task's trivial baseline" in markdown
    for name in ("summary_metric", "sweep_sst2", "sweep_stsb", "exits_sst2", "exits_stsb", "ablations_sst2"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC, name
        assert f"](../out/{name}.png)" in markdown, name
    for run_id in results["plan"]:
        assert f"`{run_id}`" in markdown

    # --render-only rebuilds the markdown from the JSON alone, byte for byte
    docs.unlink()
    for png in out.glob("*.png"):
        png.unlink()
    assert main([*argv, "--render-only"]) == 0
    assert docs.read_text() == markdown
    assert (out / "summary_metric.png").read_bytes()[:8] == PNG_MAGIC

    # a second full invocation trains and evaluates nothing again
    stamps = {p: p.stat().st_mtime_ns for p in work.glob("*/*.json") if p.name in ("done.json", "record.json")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    again = json.loads((out / "results.json").read_text())
    assert {k: v["metric_early_exit"] for k, v in again["runs"].items()} == {
        k: v["metric_early_exit"] for k, v in results["runs"].items()
    }

    # --collect reports the trained runs only, evaluates one whose evaluation is missing, trains and times nothing
    untrained, unevaluated = "main-sst2-float32-s1", "main-stsb-float32-s1"
    (work / untrained / "done.json").unlink()
    (work / unevaluated / "record.json").unlink()
    assert main([*argv, "--collect"]) == 0
    collected = json.loads((out / "results.json").read_text())
    assert set(collected["runs"]) == set(results["plan"]) - {untrained}
    assert collected["complete"] is False and not (work / untrained / "done.json").exists()
    assert collected["runs"][unevaluated]["metric_no_exit"] == results["runs"][unevaluated]["metric_no_exit"]
    assert collected["runs"]["main-sst2-w1a32-s1"]["latency"] == results["runs"]["main-sst2-w1a32-s1"]["latency"]

    # a threshold stored again (benchmarks/threshold_choice.py --write) is evaluated again, and only that run
    changed = work / "main-sst2-w1a32-s1"
    task_json = final_model_dir(changed) / "task.json"
    task_json.write_text(json.dumps({**json.loads(task_json.read_text()), "exit_threshold": 0.3}))
    stamps = {p: p.stat().st_mtime_ns for p in work.glob("*/record.json")}
    assert main([*argv, "--collect"]) == 0
    assert [p for p in stamps if p.stat().st_mtime_ns != stamps[p]] == [changed / "record.json"]
    assert json.loads((out / "results.json").read_text())["runs"][changed.name]["exit_threshold"] == 0.3


def test_render_only_without_results_fails_cleanly(tmp_path: Path, capsys):
    assert main(["--render-only", "--out", str(tmp_path / "none"), "--docs", str(tmp_path / "r.md")]) == 2
    assert "results.json" in capsys.readouterr().err


def test_collect_from_a_work_dir_without_finished_runs_fails_in_one_line(tmp_path: Path, capsys):
    fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
    argv = ["--profile", "ci", "--data-dir", str(fixtures), "--out", str(tmp_path / "out"), "--docs",
            str(tmp_path / "r.md"), "--work-dir", str(tmp_path / "none"), "--collect"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--collect: no run of this plan has finished training in" in err and "Traceback" not in err
    assert not (tmp_path / "r.md").exists()


def test_jobs_below_one_is_refused_before_any_work(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--profile", "ci", "--jobs", "0", "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w")])
    assert exit_info.value.code == 2
    assert "--jobs 0: give at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


def test_a_failed_worker_run_is_reported_and_the_others_are_kept(tmp_path: Path):
    """With --jobs 2, a run that raises (here: 5 heads for d = 32) must not stall the results of the others."""
    from beexformer.errors import BeexError
    from beexformer.report.plan import RunSpec
    from beexformer.report.runner import run_plan

    fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
    settings = profile_settings("ci", ("sst2",))
    settings.measure_latency = False
    training = {"max_steps": 2, "batch_size": 4, "max_len": 32, "vocab_size": 120}
    small = {"d_model": 32, "n_heads": 2, "d_ff": 32, "n_blocks": 2, "exit_hidden": 8}
    good = RunSpec("main", "sst2", "W1A32", 1, small, training)
    bad = RunSpec("main", "sst2", "broken", 1, {**small, "n_heads": 5}, training)
    results_path = tmp_path / "results.json"
    with pytest.raises(BeexError, match="1 of 2 runs failed"):
        run_plan(settings, [bad, good], str(fixtures), tmp_path / "w", results_path, {}, log=lambda m: None, jobs=2)
    saved = json.loads(results_path.read_text())
    assert list(saved["runs"]) == [good.run_id]
    assert "n_heads=5" in saved["failed"][bad.run_id]


def test_a_student_is_trained_after_its_teacher_and_fails_with_it(tmp_path: Path):
    """With --jobs 2, a distilled run starts only once its teacher is done and is taught by that run; the
    student of a failed teacher is reported failed instead of waiting for ever."""
    from beexformer.errors import BeexError
    from beexformer.report.plan import RunSpec
    from beexformer.report.runner import run_plan

    fixtures = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
    settings = profile_settings("ci", ("sst2",))
    settings.measure_latency = False
    training = {"max_steps": 2, "batch_size": 4, "max_len": 32, "vocab_size": 120}
    small = {"d_model": 32, "n_heads": 2, "d_ff": 32, "n_blocks": 2, "exit_hidden": 8}
    float32 = {**small, "weight_bits": 32, "act_bits": 32, "embedding_bits": 32, "exit_bits": 32}
    teacher = RunSpec("main", "sst2", "float32", 1, float32, training)
    bad_teacher = RunSpec("main", "sst2", "broken", 1, {**float32, "n_heads": 5}, training)
    student = RunSpec("main", "sst2", "W1A32 + KD", 1, small, training, teacher=teacher.run_id)
    orphan = RunSpec("main", "sst2", "W1A1 + KD", 1, {**small, "act_bits": 1}, training, teacher=bad_teacher.run_id)
    # weights first: starts from the student's finished weights, taught by the float run
    first = RunSpec("main", "sst2", "W1A4 + KD, weights first", 1, {**small, "act_bits": 4}, training,
                    teacher=teacher.run_id, start_from=student.run_id)  # fmt: skip
    # the students come first in the plan: the scheduler must still hold them back until what they need ran
    plan = [first, student, orphan, bad_teacher, teacher]
    results_path = tmp_path / "results.json"
    with pytest.raises(BeexError, match="2 of 5 runs failed"):
        run_plan(settings, plan, str(fixtures), tmp_path / "w", results_path, {}, log=lambda m: None, jobs=2)
    saved = json.loads(results_path.read_text())
    assert set(saved["runs"]) == {teacher.run_id, student.run_id, first.run_id}
    started = saved["runs"][first.run_id]["training_arguments"]
    assert started["start_from"] == str(tmp_path / "w" / student.run_id) and started["binarize_ramp"] == 0.0
    assert started["teacher"] == str(tmp_path / "w" / teacher.run_id)
    assert saved["runs"][student.run_id]["training_arguments"]["teacher"] == str(tmp_path / "w" / teacher.run_id)
    assert saved["runs"][student.run_id]["spec"]["teacher"] == teacher.run_id
    assert "teacher" not in saved["runs"][teacher.run_id]["spec"]  # specs without a teacher keep their shape
    assert saved["failed"][orphan.run_id] == f"{bad_teacher.run_id}, which it needs, failed"
