"""Own-head exits and the layer-wise forward on tiny random LLaMA, GPT-2 and GPT-NeoX models."""

from __future__ import annotations

import torch

from beexformer.llm.adapters import adapter_for
from beexformer.llm.analysis import build_report, oracle_exit, token_stats
from beexformer.llm.forward import trace
from beexformer.llm.gates import saturation


def test_last_layer_own_head_equals_model_logits(model: torch.nn.Module) -> None:
    adapter = adapter_for(model)
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).logits
        own = adapter.logits(trace(adapter, ids).layers[adapter.num_layers])
    torch.testing.assert_close(own, expected, rtol=0, atol=1e-10)


def test_without_norm_differs_and_sublayer_states_exist(model: torch.nn.Module) -> None:
    adapter = adapter_for(model)
    ids = torch.randint(0, 97, (1, 8))
    with torch.no_grad():
        tr = trace(adapter, ids, sublayer=True)
        last = tr.layers[adapter.num_layers]
        assert not torch.allclose(adapter.logits(last, use_norm=False), adapter.logits(last))
    assert sorted(tr.attn) == list(range(1, adapter.num_layers + 1))
    # The attention sub-layer changes the residual stream, and the MLP changes it again.
    assert not torch.allclose(tr.attn[1], tr.layers[1])


def test_oracle_exit_on_hand_made_table() -> None:
    # 4 exit points x 3 tokens; the last row is the final prediction.
    argmax = torch.tensor([[5, 1, 2], [5, 7, 2], [9, 7, 2], [5, 7, 2]])
    # token 0: agrees at 0, 1, not at 2 -> stable only from 3; token 1: from 1; token 2: from 0.
    assert oracle_exit(argmax).tolist() == [3, 1, 0]


def test_saturation_needs_patience_layers() -> None:
    argmax = torch.tensor([[1], [1], [1], [2]])
    assert saturation(argmax, 2)[:, 0].tolist() == [False, False, True, False]


def test_analysis_report_is_consistent(arch: str) -> None:
    from conftest import tiny_model

    model = tiny_model(arch, layers=3)
    adapter = adapter_for(model)
    rows = torch.randint(0, 97, (2, 16))
    report = build_report(token_stats(adapter, rows, True, True), adapter.num_layers, True)
    assert report.tokens == 2 * 15
    assert [p.name for p in report.points] == ["1.attn", "1", "2.attn", "2", "3.attn", "3"]
    assert report.points[-1].agreement == 1.0
    assert abs(sum(report.oracle_histogram.values()) - 1.0) < 1e-6
    assert 0.5 <= report.oracle_mean_depth <= 3
    for g in report.gates:
        assert abs(g.at_oracle + g.too_early + g.too_late - 1.0) < 1e-6
