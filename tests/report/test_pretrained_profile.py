"""The pretrained profile: its plan (order, budget, seeds) and its report on a hand-made results JSON."""

from __future__ import annotations

import json
from pathlib import Path

from beexformer.report.main import parse_args
from beexformer.report.plan import ACCEPTANCE_TASKS, build_plan, profile_settings
from beexformer.report.reference import load_reference
from beexformer.report.render_pretrained import render_pretrained

ROOT = Path(__file__).resolve().parents[2]
FLOAT, W1A32, W1A1 = "float MiniLM", "pretrained W1A32", "pretrained W1A1"
W1A32_KD, W1A4_KD = "pretrained W1A32 + KD", "pretrained W1A4 + KD"
W1A2_KD, W1A1_KD = "pretrained W1A2 + KD", "pretrained W1A1 + KD"
W1A4_KD_FIRST = "pretrained W1A4 + KD, weights first"


def test_plan_puts_what_the_acceptance_needs_first_and_has_three_seeds_on_small_tasks():
    settings = profile_settings("pretrained")
    tasks = list(settings.tasks)
    assert tasks == ["sst2", "cola", "mrpc", "stsb", "rte"]
    plan = build_plan(settings, tasks)
    first = [(s.task, s.variant, s.seed) for s in plan[:12]]
    assert first == [(t, v, 1) for t in ACCEPTANCE_TASKS for v in (FLOAT, W1A32, W1A32_KD)]
    assert [(s.task, s.variant) for s in plan[12:32]] == [
        (t, v) for t in ACCEPTANCE_TASKS for v in (W1A1, W1A4_KD, W1A2_KD, W1A1_KD, W1A4_KD_FIRST)
    ]
    assert {s.seed for s in plan if s.task == "sst2"} == {1}
    assert {s.seed for s in plan if s.task == "cola"} == {1, 2, 3}
    assert len(plan) == 8 + 4 * 3 * 8
    # every distilled run is taught by the float run of its task and seed, which comes before it
    order = [s.run_id for s in plan]
    for s in plan:
        if "+ KD" in s.variant:
            assert s.teacher == f"main-{s.task}-float-minilm-s{s.seed}"
            assert order.index(s.teacher) < order.index(s.run_id)
        else:
            assert s.teacher is None
        # weights first: from the W1A32 + KD run of its task and seed, trained before it
        if s.variant == W1A4_KD_FIRST:
            assert s.start_from == f"main-{s.task}-pretrained-w1a32-kd-s{s.seed}"
            assert order.index(s.start_from) < order.index(s.run_id) and s.needs == [s.teacher, s.start_from]
        else:
            assert s.start_from is None and "start_from" not in s.to_dict()
    # every run starts from MiniLM with the task's fixed step budget; the float twin has nothing 1-bit
    assert all(s.training["init"] == "minilm" and "max_steps" not in s.training for s in plan)
    assert next(s for s in plan if s.variant == FLOAT).model["weight_bits"] == 32
    assert next(s for s in plan if s.variant == W1A1).model == {"act_bits": 1}
    assert next(s for s in plan if s.variant == W1A2_KD).model == {"act_bits": 2}
    assert not any(settings.measures_latency(s) for s in plan)


def test_pretrained_writes_its_own_files_by_default():
    args = parse_args(["--profile", "pretrained"])
    assert (args.out, args.docs) == ("benchmarks/results/pretrained", "docs/results-pretrained.md")
    assert parse_args([]).docs == "docs/results.md"


def test_from_scratch_reference_is_read_from_the_committed_quick_results():
    ref = load_reference(ROOT / "benchmarks/results/reproduce/results.json", ["sst2", "cola"])
    entry = ref.get("sst2", "W1A32")
    quick = json.loads((ROOT / "benchmarks/results/reproduce/results.json").read_text())
    assert entry.stats["metric_no_exit"] == quick["aggregate"]["main|sst2|W1A32"]["metric_no_exit"]
    assert entry.steps == quick["runs"]["main-sst2-w1a32-s1"]["trained_steps"]
    assert ref.get("cola", "W1A1").seeds == [1, 2, 3] and ref.profile == "quick"


def _stat(value: float) -> dict:
    return {"n": 1, "mean": value, "std": 0.0, "min": value, "max": value}


def _run(task: str, variant: str, metric: float, histogram: list[int], packed: int | None) -> dict:
    run_id = f"main-{task}-{variant.lower().replace(' ', '-')}-s1"
    n = sum(histogram)
    return {
        "spec": {"run_id": run_id, "group": "main", "task": task, "variant": variant, "seed": 1},
        "config": {"n_blocks": len(histogram)},
        "metric_name": "accuracy" if task == "sst2" else "pearson",
        "n_dev": n,
        "exit_rule": "fractional_entropy" if task == "sst2" else "regression_patience",
        "exit_threshold": 0.1,
        "metric_no_exit": metric,
        "metric_early_exit": metric,
        "flops_saved": 0.6,
        "flops_saved_cap_block2": 0.66,
        "mean_exit_block": 2.0,
        "agreement_with_last_exit": 1.0,
        "exit_histogram": histogram,
        "rules": {},
        "sweep": [],
        "size": {"size_ratio": 20.0, "packed_bytes": packed, "float32_checkpoint_bytes": 90_000_000},
        "train_minutes": 5.0,
        "train_cpu_minutes": 2.5,
        "eval_minutes": 1.0,
        "trained_steps": 400,
        "training_arguments": {"batch_size": 32, "lr": 5e-5, "binary_lr": 5e-5},
    }


def _results() -> dict:
    settings = profile_settings("pretrained", ("sst2", "stsb"))
    plan = build_plan(settings, ["sst2", "stsb"])
    runs = [
        _run("sst2", FLOAT, 0.86, [0, 100, 100, 0, 0, 0], None),
        _run("sst2", W1A32, 0.82, [0, 100, 100, 0, 0, 0], 4_000_000),
        _run("sst2", W1A32_KD, 0.845, [0, 100, 100, 0, 0, 0], 4_000_000),
        # every STS-B sample leaves at block 2, the earliest regression_patience allows
        _run("stsb", W1A32, 0.60, [0, 300, 0, 0, 0, 0], 4_000_000),
    ]
    bars = {
        "sst2": {
            "trivial": {"task": "sst2", "metric_name": "accuracy", "value": 0.509, "answer": "majority", "n_dev": 200},
            "tfidf": {"task": "sst2", "metric_name": "accuracy", "value": 0.826, "model": "logistic regression",
                      "parameter": "C", "chosen": 16.0, "held_out_scores": {}, "n_train": 9, "n_held_out": 1,
                      "n_dev": 200, "seconds": 60.0},
        },
        "stsb": {
            "trivial": {"task": "stsb", "metric_name": "pearson", "value": 0.0, "answer": "any", "n_dev": 300},
            "tfidf": None,
        },
    }  # fmt: skip
    return {
        "command": "python benchmarks/reproduce.py --profile pretrained",
        "tasks": ["sst2", "stsb"],
        "profile": settings.to_dict(),
        "plan": [s.run_id for s in plan],
        "runs": {r["spec"]["run_id"]: r for r in runs},
        "baselines": bars,
        "environment": {},
    }


def test_report_checks_the_acceptance_and_marks_what_does_not_count(tmp_path: Path):
    results = _results()
    md = render_pretrained(results, tmp_path / "docs" / "r.md", tmp_path, tmp_path / "out" / "results.json")
    assert "**partial**" in md and "4 of 32 planned runs" in md
    # SST-2: float 86.00 above both bars; W1A32 82.00 under TF-IDF's 82.60: marked and not accepted; the
    # distilled W1A32 84.50 is above both and within 3 points of the float model
    assert "| SST-2 | 50.90 | 82.60 | 86.00 | 82.00 ‡ | 84.50 | yes | **no** | yes |" in md
    assert "pretrained W1A32 is 4.00 points below the float MiniLM (**not** within 3 points)" in md
    assert "pretrained W1A32 + KD is 1.50 points below the float MiniLM (within 3 points)" in md
    # STS-B's float run is missing; its W1A32 saving does not count: all samples at block 2
    assert "| STS-B | 0.00 | - | not run yet | 60.00 | not run yet | not run yet | yes | not run yet |" in md
    assert "60.00 % (all at block 2: does not count)" in md
    assert "| SST-2 | float MiniLM | 1 | 400 | 86.00 | 86.00 |" in md
    assert "| 90.0 | 5.0 | 2.5 |" in md  # float checkpoint MB, wall and CPU minutes
    assert "20.0 min of wall clock (10.0 CPU-minutes)" in md
    assert "`main-stsb-float-minilm-s1` | not run yet" in md
    assert "facebookresearch/bit" in md and "| BiT | 1-1-1 | 13.4 | 89.9 | 72.0 |" in md
    # the same JSON gives the same markdown
    assert render_pretrained(results, tmp_path / "docs" / "r.md", tmp_path, tmp_path / "out" / "results.json") == md
