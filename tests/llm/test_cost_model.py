"""The cost model's closed forms (benchmarks/llm_cost_model.py) against hand-computed cases."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from beexformer.llm.calibration import calibrate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from llm_cost_model import (  # noqa: E402
    ExitProfile,
    GateCosts,
    UnitCosts,
    best_gate_layers,
    predict_early_exit,
    predict_from_calibrations,
    predict_self_speculative,
)

# One-row layer 1 ms, extra rows free, head 10 ms whatever the rows: the memory-bound limit.
FREE_ROWS = UnitCosts({k: 1.0 for k in (1, 2, 3, 4, 5, 8)}, {1: 10.0, 5: 10.0}, 0.0, 0.0)
NO_GATE = GateCosts(0.0, 0.0)


def test_early_exit_saves_the_head_and_the_layers_of_exited_tokens() -> None:
    prof = ExitProfile([4], [0.5], [1.0])
    # Plain: 20 + 10 = 30 ms. Exited half: 4 ms (the other 16 layers ride along for free), full half: 30 ms.
    assert predict_early_exit(FREE_ROWS, 20, NO_GATE, prof) == pytest.approx(30 / (0.5 * 30 + 0.5 * 4))
    # A gate call of 1 ms at layer 4: every token pays one call; a probe that fires adds its head (2 ms).
    assert predict_early_exit(FREE_ROWS, 20, GateCosts(1.0, 2.0), prof) == pytest.approx(30 / (17 + 1 + 1))
    assert predict_early_exit(FREE_ROWS, 20, NO_GATE, ExitProfile([4], [0.0], [0.0])) == pytest.approx(1.0)


def test_self_speculation_with_sure_drafts_and_free_rows() -> None:
    """Every token drafted at layer 4 and accepted, up to 3 drafts: a cycle makes 4 tokens for 3 drafts of 4
    ms and one verify pass of 30 ms (extra rows and head rows free)."""
    prof = ExitProfile([4], [1.0], [1.0])
    assert predict_self_speculative(FREE_ROWS, 20, NO_GATE, prof, 3) == pytest.approx(4 * 30 / (3 * 4 + 30))
    # Never drafted: one verify of one row per token, i.e. plain decoding plus the gate calls.
    never = ExitProfile([4], [0.0], [0.0])
    assert predict_self_speculative(FREE_ROWS, 20, NO_GATE, never, 3) == pytest.approx(1.0)
    assert predict_self_speculative(FREE_ROWS, 20, GateCosts(3.0, 0.0), never, 3) == pytest.approx(30 / 33)


def _two_layer_calibration() -> object:
    """20 tokens, heads at layers 4 and 18 of 20, alpha 1.0: layer 4 may take token 0 only (the only one it
    gets right with the lowest entropy), layer 18 tokens 0-9."""
    n = 20
    agree4 = torch.zeros(n, dtype=torch.bool)
    agree4[0] = True
    agree18 = torch.arange(n) < 10
    scores = {
        "entropy": {4: torch.arange(n, dtype=torch.float), 18: torch.arange(n, dtype=torch.float)},
        "agree": {4: agree4, 18: agree18},
        "real": {4: torch.ones(n, dtype=torch.bool), 18: torch.ones(n, dtype=torch.bool)},
    }
    return calibrate(scores, [1.0], n, "x.txt")


def test_gate_layers_are_chosen_where_their_exits_pay_for_their_calls() -> None:
    calib = _two_layer_calibration()
    # Plain: 20 + 10 = 30 ms. Layer 18 alone with a 1 ms gate: half the tokens exit at 18 ms + 1 (their last two
    # layers ride along free), the other half pay 31 ms. Layer 4 takes 5 % of tokens and costs every token 1 ms.
    gate = GateCosts(1.0, 0.0)
    layers, speed = best_gate_layers(calib, 1.0, "entropy", "early-exit", FREE_ROWS, 20, gate, 3)
    assert layers == [18] and speed == pytest.approx(30 / (0.5 * 19 + 0.5 * 31))
    # Gates for free: layer 4's token exits there instead of at 18, so both layers together are fastest.
    layers, speed = best_gate_layers(calib, 1.0, "entropy", "early-exit", FREE_ROWS, 20, NO_GATE, 3)
    assert layers == [4, 18] and speed == pytest.approx(30 / (0.05 * 4 + 0.45 * 18 + 0.5 * 30))
    # At alpha 0.75 layer 4 alone takes tokens 0-11 (9 right: 0.75), layer 18 alone all 20 (16 right: 0.8).
    # Together layer 18 only gets tokens 12-19, half of them wrong: the pair's exits agree 13 / 20 < 0.75, so
    # early exit may not gate at both, however much faster the pair would be (20 + 10 = 30 ms plain; layer 4
    # alone 0.6 * 4 + 0.4 * 30 ms a token, the pair 0.6 * 4 + 0.4 * 18).
    scores = {
        "entropy": {4: torch.arange(20.0), 18: torch.arange(20.0)},
        "agree": {4: torch.arange(20) < 9, 18: torch.arange(20) < 16},
        "real": {4: torch.ones(20, dtype=torch.bool), 18: torch.ones(20, dtype=torch.bool)},
    }
    mixed = calibrate(scores, [0.75], 20, "x.txt")
    assert [e.exit_share for e in mixed.level(0.75)] == pytest.approx([0.6, 1.0])
    layers, speed = best_gate_layers(mixed, 0.75, "entropy", "early-exit", FREE_ROWS, 20, NO_GATE, 3)
    assert layers == [4] and speed == pytest.approx(30 / (0.6 * 4 + 0.4 * 30))
    # A gate dearer than anything its exits save: no gate at all (plain decoding, 1.0).
    assert best_gate_layers(calib, 1.0, "entropy", "early-exit", FREE_ROWS, 20, GateCosts(20.0, 0.0), 3) == ([], 1.0)


def test_predictions_from_a_calibration_and_an_earlier_runs_costs() -> None:
    # The costs of FREE_ROWS as a run records them, with a 1 ms entropy gate call and no probe timed.
    costs = {
        "layer_ms": {str(k): 1.0 for k in (1, 2, 3, 4, 5, 8)},
        "full_head_ms": 10.0,
        "full_head_ms_5rows": 10.0,
        "gate_ms": 1.0,
        "gate_call_ms_cold": 1.0,
    }
    rows = predict_from_calibrations(costs, {"wikitext": _two_layer_calibration()}, [1.0], 20, 3)
    assert [(r.mode, r.gate) for r in rows] == [("early-exit", "entropy"), ("self-speculative", "entropy")]
    early = rows[0]
    assert early.layers == [18] and early.exit_share == pytest.approx(0.5) and early.exit_agreement == 1.0
    assert early.speedup == pytest.approx(30 / (0.5 * 19 + 0.5 * 31))
