"""Confidence probes: they learn when a head agrees with the final layer, are saved with the heads, are
calibrated on their score, and gate decoding without changing self-speculative output."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from beexformer.llm.adapters import adapter_for
from beexformer.llm.calibration import Calibration, calibrate
from beexformer.llm.forward import trace
from beexformer.llm.gates import ProbeGate
from beexformer.llm.generation import FullDecoding, SelfSpeculativeDecoding
from beexformer.llm.heads import ExitHeads
from beexformer.llm.probes import ExitProbe, ProbeConfig, head_agreement, train_probes
from beexformer.llm.training import Features
from conftest import VOCAB, tiny_model

PROMPTS = [[3, 17, 42], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]


def _features_with_learnable_agreement(heads: ExitHeads, layer: int, n: int = 2048) -> Features:
    """Rows whose final greedy token equals head `layer`'s top token exactly when hidden[:, 0] > 0."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, heads.head(layer).weight.shape[1], generator=gen, dtype=torch.float64)
    with torch.no_grad():
        head_tokens = heads.head(layer).class_to_token(heads.head(layer)(hidden).argmax(-1))
    argmax = torch.where(hidden[:, 0] > 0, head_tokens, (head_tokens + 1) % VOCAB)
    return Features({layer: hidden}, hidden, torch.zeros(n), argmax, torch.ones(n))


def test_probe_learns_when_the_head_agrees_and_is_saved_with_the_heads(tmp_path: Path) -> None:
    adapter = adapter_for(tiny_model("llama"))
    heads = ExitHeads.create(adapter, [2], None, "tiny").double()
    features = _features_with_learnable_agreement(heads, 2)
    labels = head_agreement(heads, features, 2)
    assert 0.4 < float(labels.float().mean()) < 0.6  # the majority baseline is about 0.5
    accuracy = train_probes(heads, features, ProbeConfig(width=0, steps=400, batch=256, lr=1e-2), log=lambda _: None)
    assert accuracy[2] > 0.95
    heads.save(tmp_path / "h.safetensors")
    again = ExitHeads.load(tmp_path / "h.safetensors", adapter)
    assert again.info.probe_width == 0
    x = features.hidden[2][:16]
    torch.testing.assert_close(again.probe(2)(x), heads.probe(2)(x))


def test_probe_calibration_thresholds_scores_and_first_exits(tmp_path: Path) -> None:
    """Probe scores are calibrated like entropies, but a high score is confident; first-exit shares count a
    token at the first layer that fires only."""
    scores = {
        "entropy": {2: torch.tensor([0.1, 0.2, 0.3, 0.4]), 4: torch.tensor([0.1, 0.1, 0.1, 0.9])},
        "agree": {2: torch.tensor([True, True, False, False]), 4: torch.tensor([True, True, True, False])},
        "real": {2: torch.ones(4, dtype=torch.bool), 4: torch.ones(4, dtype=torch.bool)},
        "probe": {2: torch.tensor([3.0, 2.0, 1.0, 0.0]), 4: torch.tensor([5.0, 5.0, 5.0, -1.0])},
    }
    calib = calibrate(scores, [0.9], 4, "x.txt")
    calib.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert again.thresholds_for(0.9, "probe") == {2: pytest.approx(2.0), 4: pytest.approx(5.0)}
    assert again.thresholds_for(0.9) == {2: pytest.approx(0.2), 4: pytest.approx(0.1)}
    first = {e.layer: e.first_exit_share for e in again.level(0.9, "probe")}
    assert first == {2: 0.5, 4: 0.25}  # tokens 0, 1 exit at layer 2; token 2 at layer 4; token 3 never
    agreement = {e.layer: e.first_exit_agreement for e in again.level(0.9, "probe")}
    assert agreement == {2: 1.0, 4: 1.0}


def test_probe_gate_runs_the_head_only_when_it_fires() -> None:
    adapter = adapter_for(tiny_model("llama"))
    heads = ExitHeads.create(adapter, [2], None, "tiny").double()
    heads.attach_probes({2: ExitProbe(adapter.hidden_size, 0).double()}, 0)
    hidden = torch.randn(50, adapter.hidden_size, dtype=torch.float64)
    scores = heads.probe(2)(hidden)
    threshold = float(scores.median())
    gate = ProbeGate(heads, {2: threshold})
    verdicts = [gate(2, h) for h in hidden]
    assert gate.head_runs == int((scores >= threshold).sum())
    expected = heads.head(2)(hidden).argmax(-1)
    for verdict, score, token in zip(verdicts, scores, expected, strict=True):
        assert verdict == (int(token) if score >= threshold else None)
    never = ProbeGate(heads, {2: math.inf})
    assert never.layers == frozenset()


def test_probe_gate_needs_probes() -> None:
    from beexformer.errors import ConfigError

    adapter = adapter_for(tiny_model("llama"))
    heads = ExitHeads.create(adapter, [2], None, "tiny").double()
    with pytest.raises(ConfigError, match="no confidence probe"):
        ProbeGate(heads, {2: 0.0})


def test_self_speculative_with_probe_gates_equals_greedy(arch: str) -> None:
    """Multi-token drafts chosen by (random) probes: output is still plain greedy, with drafts accepted and
    rejected, and the heads run only for the drafts the probes let through."""
    model = tiny_model(arch, seed=3)
    adapter = adapter_for(model)
    heads = ExitHeads.create(adapter, [2, 3], torch.arange(0, VOCAB, 2), "tiny").double()
    torch.manual_seed(1)
    heads.attach_probes({k: ExitProbe(adapter.hidden_size, 8).double() for k in (2, 3)}, 8)
    # Thresholds at the probes' median score on the prompts' hidden states: they fire about half the time.
    states = trace(adapter, torch.tensor([PROMPTS[1]]), keep=[2, 3]).layers
    medians = {k: float(heads.probe(k)(states[k]).median()) for k in (2, 3)}
    drafted = accepted = 0
    for prompt in PROMPTS:
        reference = FullDecoding(adapter).generate(torch.tensor(prompt), 24).tokens
        gate = ProbeGate(heads, medians)
        out = SelfSpeculativeDecoding(adapter, gate, max_draft=4).generate(torch.tensor(prompt), 24)
        assert out.tokens == reference
        assert out.gate_head_runs < out.gate_calls
        drafted, accepted = drafted + out.drafted, accepted + out.accepted
    assert drafted > 0 and accepted < drafted
