"""Typed evaluation results: a rule's result and the eval report computed on hand-made exit logits."""

from __future__ import annotations

import json

import numpy as np

from beexformer.config import BEExformerConfig
from beexformer.data.glue import get_task
from beexformer.evaluation import EvaluationReport, ExitLogits, RuleResult, evaluation_report, rule_result, sweep_rows
from beexformer.exits import NeverExit, Patience

CONFIG = BEExformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_blocks=3, exit_hidden=4, n_classes=2)


def _data(labels):
    # Sample 0: class 1 at every exit (patience 1 leaves at block 2); sample 1: class 0, then 1, then 1
    # (leaves at block 3); sample 2: class 0 at every exit (block 2).
    logits = np.array([[[0, 1], [0, 1], [0, 1]], [[1, 0], [0, 1], [0, 1]], [[1, 0], [1, 0], [1, 0]]], dtype=np.float32)
    return ExitLogits(logits, np.array([5, 5, 5]), None if labels is None else np.array(labels))


def test_rule_result_is_typed_and_correct():
    task = get_task("sst2")
    result = rule_result(task, CONFIG, _data([1, 0, 0]), Patience(1))
    assert isinstance(result, RuleResult)
    assert result.exit_histogram == [0, 2, 1] and result.exit_rule == "patience" and result.threshold == 1
    assert result.metric == 2 / 3  # sample 1 answers class 1, its label is 0
    assert result.agreement_with_last_exit == 1.0 and 0 < result.flops_saved < 1
    none = rule_result(task, CONFIG, _data([1, 0, 0]), NeverExit())
    assert none.flops_saved == 0.0 and none.threshold is None and none.exit_histogram == [0, 0, 3]


def test_evaluation_report_json_keeps_its_keys_and_drops_labels_when_unlabelled():
    task = get_task("sst2")
    report = evaluation_report(task, CONFIG, _data([1, 0, 0]), Patience(1))
    assert isinstance(report, EvaluationReport)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["metric_per_exit"] == [1.0, 2 / 3, 2 / 3] and as_json["metric_no_exit"] == 2 / 3
    unlabelled = evaluation_report(task, CONFIG, _data(None), Patience(1)).to_dict()
    assert "metric_early_exit" not in unlabelled and unlabelled["exit_histogram"] == [0, 2, 1]
    rows = sweep_rows(task, CONFIG, _data([1, 0, 0]), ["patience"])
    assert rows[0].rule == "none" and rows[0].metric == 2 / 3 and {r.rule for r in rows} == {"none", "patience"}
