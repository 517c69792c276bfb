"""Decoding strategies: self-speculative output equals plain greedy, never-firing gates equal plain decoding,
and the lazily recomputed KV cache equals that of a full forward pass."""

from __future__ import annotations

import pytest
import torch

from beexformer.llm.adapters import adapter_for
from beexformer.llm.forward import position_mask
from beexformer.llm.gates import HeadGate
from beexformer.llm.generation import (
    EarlyExitDecoding,
    FullDecoding,
    GateBudget,
    GateLedger,
    GatePrices,
    LayerwiseDecoder,
    SelfSpeculativeDecoding,
)
from beexformer.llm.heads import ExitHeads
from conftest import GEMMA, VOCAB, tiny_model

PROMPTS = [[3, 17, 42], [5], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]


def damped_model(arch: str, scale: float = 0.15) -> torch.nn.Module:
    """A tiny model whose layers 4..6 change the residual stream little, so exits at layer 2-3 are often but
    not always right: the speculative tests then see both accepted and rejected drafts."""
    model = tiny_model(arch, layers=6, seed=3)
    adapter = adapter_for(model)
    with torch.no_grad():
        for layer in list(adapter.layers)[3:]:
            for name, p in layer.named_parameters():
                if arch in GEMMA:
                    # Gemma renormalises o_proj/down_proj outputs: damp the (1 + w) post-norms instead.
                    if name.endswith(("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")):
                        p.copy_((1 + p) * scale - 1)
                elif name.endswith(
                    (
                        "o_proj.weight",
                        "down_proj.weight",
                        "c_proj.weight",
                        "dense.weight",
                        "dense_4h_to_h.weight",
                    )
                ):
                    p.mul_(scale)
    return model


def hf_greedy(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return out[0, len(prompt) :].tolist()


def own_heads(adapter, layers: list[int], pruned: bool) -> ExitHeads:  # noqa: ANN001
    ids = torch.arange(0, VOCAB, 2) if pruned else None
    return ExitHeads.create(adapter, layers, ids, "tiny").double()


@pytest.mark.parametrize("n", [1, 25])
def test_full_decoding_equals_hf_greedy(arch: str, n: int) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    for prompt in PROMPTS:
        assert FullDecoding(adapter).generate(torch.tensor(prompt), n).tokens == hf_greedy(model, prompt, n)


@pytest.mark.parametrize("pruned", [False, True])
def test_self_speculative_equals_greedy(arch: str, pruned: bool) -> None:
    model = damped_model(arch)
    adapter = adapter_for(model)
    heads = own_heads(adapter, [2, 3], pruned)
    drafted = accepted = 0
    # (entropy threshold, longest draft, acceptance floor per layer for the adaptive policy)
    cases = [(0.5, 1, None), (2.0, 3, None), (10.0, 8, None), (10.0, 4, {2: 0.9, 3: 0.5})]
    for prompt in PROMPTS:
        reference = hf_greedy(model, prompt, 30)
        for tau, max_draft, floors in cases:
            gate = HeadGate(heads, {2: tau, 3: tau})
            strategy = SelfSpeculativeDecoding(
                adapter, gate, max_draft=max_draft, min_acceptance=floors, warmup_drafts=2
            )
            for n in (2, 30):
                out = strategy.generate(torch.tensor(prompt), n)
                assert out.tokens == reference[:n], (tau, prompt, n, max_draft, floors)
                drafted += out.drafted
                accepted += out.accepted
    # Both paths ran: drafts that the full model confirmed and drafts it rejected (cache cropped).
    assert 0 < accepted < drafted


def test_self_speculative_with_always_wrong_drafts(arch: str) -> None:
    """Every draft rejected: the cache must be cropped each time or the output would drift."""
    model = tiny_model(arch)
    adapter = adapter_for(model)
    prompt = torch.tensor(PROMPTS[0])
    reference = FullDecoding(adapter).generate(prompt, 20).tokens

    def wrong_gate(depth: int, hidden: torch.Tensor) -> int:
        full = int(adapter.logits(hidden).argmax())
        return (full + 1) % VOCAB  # not necessarily wrong against the final layer, but usually

    wrong_gate.layers = frozenset({2})  # type: ignore[attr-defined]
    out = SelfSpeculativeDecoding(adapter, wrong_gate, max_draft=4).generate(prompt, 20)  # type: ignore[arg-type]
    assert out.tokens == reference
    assert out.drafted > out.accepted


def test_early_exit_never_firing_equals_plain(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    heads = own_heads(adapter, [1, 3, 5], pruned=True)
    references = {tuple(p): hf_greedy(model, p, 15) for p in PROMPTS}
    for thresholds in ({1: -1.0, 3: -1.0, 5: -1.0}, {1: 0.0, 3: 0.0}, {}):
        gate = HeadGate(heads, thresholds)
        for prompt in PROMPTS:
            out = EarlyExitDecoding(adapter, gate).generate(torch.tensor(prompt), 15)
            assert out.tokens == references[tuple(prompt)]
            assert out.exit_depths == [adapter.num_layers] * 15


def test_early_exit_fires_and_changes_depths(arch: str) -> None:
    model = damped_model(arch)
    adapter = adapter_for(model)
    gate = HeadGate(own_heads(adapter, [2], pruned=False), {2: 100.0})  # always fires
    out = EarlyExitDecoding(adapter, gate, max_pending=4).generate(torch.tensor(PROMPTS[0]), 20)
    assert len(out.tokens) == 20
    # At most 4 exits in a row, then a full pass brings the pending rows up to date.
    assert out.exit_depths.count(2) >= 12 and out.full_passes >= 4


def test_lazy_recompute_leaves_the_exact_kv_cache(arch: str) -> None:
    """After early-exit decoding, every layer's K/V at every position equals a full forward's."""
    model = damped_model(arch)
    adapter = adapter_for(model)
    calls = []

    def gate(depth: int, hidden: torch.Tensor) -> int | None:
        # Exit on two calls out of three, at layer 2 or 4, with the own head's token: deterministic and mixed.
        calls.append(depth)
        return int(adapter.logits(hidden).argmax()) if len(calls) % 3 else None

    decoder = LayerwiseDecoder(adapter)
    prompt = torch.tensor(PROMPTS[0])
    state, last = decoder.prefill(prompt)
    tokens, exits = prompt.tolist() + [int(adapter.logits(last).argmax())], 0
    with torch.no_grad():
        for _ in range(25):
            out = decoder.step(state, tokens[-1], len(tokens) - 1, gate, {2, 4})
            exits += out.exited
            tokens.append(out.token if out.exited else int(adapter.logits(out.final_hidden[-1]).argmax()))
        # Finish the pending rows, then compare with a fresh prefill of the same tokens.
        if state.pending_pos:
            decoder.step(state, None, 0)
        ref_state, _ = decoder.prefill(torch.tensor(tokens[:-1]))
    assert exits > 3
    # Gemma's RMSNorm computes in float32 even in a float64 model: rows grouped differently round differently
    # there (about 3e-7), far below what a wrong position or a missing row would change.
    tol = {"rtol": 1e-5, "atol": 1e-5} if arch in GEMMA else {}
    for layer in range(adapter.num_layers):
        order = torch.argsort(state.cache.positions[layer])
        assert state.cache.positions[layer][order].tolist() == list(range(len(tokens) - 1))
        torch.testing.assert_close(state.cache.keys[layer][:, :, order], ref_state.cache.keys[layer], **tol)
        torch.testing.assert_close(state.cache.values[layer][:, :, order], ref_state.cache.values[layer], **tol)


def test_work_counters_match_the_schedule(arch: str) -> None:
    """The cost model relies on these counts: full decoding of n tokens is (n - 1) one-row passes."""
    adapter = adapter_for(tiny_model(arch))
    num = adapter.num_layers
    full = FullDecoding(adapter).generate(torch.tensor(PROMPTS[0]), 10)
    assert full.layer_calls == {1: num * 9} and full.head_calls == {1: 10} and full.gate_calls == 0

    def always(depth: int, hidden: torch.Tensor) -> int:
        return 1

    always.layers = frozenset({2})  # type: ignore[attr-defined]
    spec = SelfSpeculativeDecoding(adapter, always, max_draft=3).generate(torch.tensor(PROMPTS[0]), 10)  # type: ignore[arg-type]
    # Every verify pass runs the drafts' remaining layers with k = drafts + 1 rows.
    # The gate is asked once per draft, plus at most once per verify pass (not when the draft is full).
    assert spec.drafted <= spec.gate_calls <= spec.drafted + spec.full_passes
    assert max(spec.layer_calls) == max(spec.draft_lengths) + 1


def test_adaptive_policy_stops_drafting_from_a_bad_layer() -> None:
    """A layer whose drafts are always rejected stops drafting after the warm-up drafts."""
    model = tiny_model("llama")
    adapter = adapter_for(model)

    def wrong(depth: int, hidden: torch.Tensor) -> int:
        return (int(adapter.logits(hidden).argmax()) + 1) % VOCAB

    wrong.layers = frozenset({2})  # type: ignore[attr-defined]
    prompt = torch.tensor(PROMPTS[0])
    eager = SelfSpeculativeDecoding(adapter, wrong, max_draft=1)  # type: ignore[arg-type]
    adaptive = SelfSpeculativeDecoding(adapter, wrong, max_draft=1, min_acceptance={2: 0.5}, warmup_drafts=3)  # type: ignore[arg-type]
    a, b = eager.generate(prompt, 20), adaptive.generate(prompt, 20)
    assert a.tokens == b.tokens
    assert b.drafted == 3 < a.drafted


def test_draft_statistics_carry_the_adaptive_policy_across_generations() -> None:
    """With shared DraftStatistics, a layer turned off during one answer stays off for the next; each answer
    is still plain greedy."""
    from beexformer.llm.generation import DraftStatistics

    model = tiny_model("llama")
    adapter = adapter_for(model)

    def wrong(depth: int, hidden: torch.Tensor) -> int:
        return (int(adapter.logits(hidden).argmax()) + 1) % VOCAB

    wrong.layers = frozenset({2})  # type: ignore[attr-defined]
    adaptive = SelfSpeculativeDecoding(adapter, wrong, max_draft=1, min_acceptance={2: 0.5}, warmup_drafts=3)  # type: ignore[arg-type]
    stats = DraftStatistics()
    first = adaptive.generate(torch.tensor(PROMPTS[0]), 20, stats=stats)
    second = adaptive.generate(torch.tensor(PROMPTS[2]), 20, stats=stats)
    fresh = adaptive.generate(torch.tensor(PROMPTS[2]), 20)
    assert first.drafted == 3 and stats.tried[2] == 3 and stats.acceptance(2) == 0.0
    assert second.drafted == 0  # learnt in the first answer
    assert fresh.drafted == 3  # without shared statistics the layer is tried again
    assert second.tokens == fresh.tokens == hf_greedy(model, PROMPTS[2], 20)


# SmolLM2-like prices in one-row layers: a head of 5 layers, a second row 0.06 of a layer, a gate call 0.56.
SMOL = GatePrices(layer=1.0, extra_row=0.06, head=5.0, extra_head_row=1.65, call=0.56)


def test_ledger_switches_off_a_gate_that_is_never_accepted() -> None:
    """A constructed sequence: a layer-6 gate of a 30-layer model whose every draft is rejected. Each call and
    rejection is priced; once it has made min_calls calls and is more than the margin in the red, it is off."""
    budget = GateBudget(SMOL, min_calls=5, margin=0.1)  # margin: 0.1 x (30 + 5) = 3.5 layers
    ledger = GateLedger(budget, frozenset({6, 24}), 30)
    gate = ledger.watch(lambda depth, hidden: 7)
    for call in range(1, 5):
        gate(6, None)
        ledger.verified([6], accepted=0)  # each rejection loses 6 + 24 x 0.06 + 1.65 = 9.09 layers
        assert ledger.active == {6, 24}, call  # deep in the red, but fewer than min_calls calls
    gate(6, None)
    assert ledger.active == {6, 24}  # a call that fires is judged when its draft is
    ledger.verified([6], accepted=0)
    assert ledger.active == {24} and ledger.switched_off == {6: 5}
    assert ledger.balance[6] == pytest.approx(-5 * (0.56 + 9.09))
    # A gate that is asked and never fires: off at its min_calls-th call once 0.56 a call is past -3.5.
    silent = ledger.watch(lambda depth, hidden: None)
    for _ in range(6):
        silent(24, None)
    assert ledger.active == {24}  # 6 calls: -3.36
    silent(24, None)
    assert ledger.active == set() and ledger.switched_off == {6: 5, 24: 7}


def test_ledger_keeps_a_gate_that_pays_and_has_hysteresis() -> None:
    """Kept drafts pay for later rejections: the gate goes off only when the running balance falls below the
    margin, not at the first loss after min_calls."""
    ledger = GateLedger(GateBudget(SMOL, min_calls=2, margin=0.1), frozenset({6}), 30)
    gate = ledger.watch(lambda depth, hidden: 7)
    gate(6, None)
    ledger.verified([6], accepted=1)  # + (35 - 9.09) = 25.91
    for _ in range(2):
        gate(6, None)
        ledger.verified([6], accepted=0)
    # 25.91 - 3 x 0.56 - 2 x 9.09 = 6.05: two losses after min_calls, still on (without the kept draft it
    # would have gone off at the first of them).
    assert ledger.active == {6} and ledger.balance[6] == pytest.approx(6.05)
    gate(6, None)
    ledger.verified([6], accepted=0)  # 6.05 - 0.56 - 9.09 = -3.60, past the margin of -3.5
    assert ledger.active == set() and ledger.switched_off == {6: 4}


def test_ledger_switches_off_never_firing_early_exit_gates_and_keeps_the_output(arch: str) -> None:
    """Gates that never fire cost every call and buy nothing: each is off after exactly min_calls calls, and
    the tokens are plain greedy's."""
    model = tiny_model(arch)
    adapter = adapter_for(model)
    heads = own_heads(adapter, [1, 3, 5], pruned=True)
    gate = HeadGate(heads, {1: -1.0, 3: -1.0, 5: -1.0})
    budget = GateBudget(GatePrices(1.0, 0.5, 1.0, 0.5, call=1.0), min_calls=4, margin=0.0)
    for prompt in PROMPTS:
        out = EarlyExitDecoding(adapter, gate, budget=budget).generate(torch.tensor(prompt), 15)
        assert out.tokens == hf_greedy(model, prompt, 15)
        assert out.switched_off == {1: 4, 3: 4, 5: 4} and out.gate_calls == 12


def test_ledger_keeps_early_exit_gates_whose_exits_pay(arch: str) -> None:
    """An always-firing gate earns an exit's worth at every call: never switched off, so the decoding is the
    same as without a ledger."""
    adapter = adapter_for(damped_model(arch))
    gate = HeadGate(own_heads(adapter, [2], pruned=False), {2: 100.0})
    budget = GateBudget(GatePrices(1.0, 0.5, 1.0, 0.5, call=1.0), min_calls=1, margin=0.0)
    prompt = torch.tensor(PROMPTS[0])
    plain = EarlyExitDecoding(adapter, gate, max_pending=4).generate(prompt, 20)
    out = EarlyExitDecoding(adapter, gate, max_pending=4, budget=budget).generate(prompt, 20)
    assert out.switched_off == {} and out.tokens == plain.tokens and out.exit_depths == plain.exit_depths


def test_switching_gates_off_never_changes_the_greedy_output(arch: str) -> None:
    """Self-speculation with a ledger that switches layers off in the middle of a generation (drafts both kept
    and rejected before) still produces plain greedy's tokens."""
    model = damped_model(arch)
    adapter = adapter_for(model)
    heads = own_heads(adapter, [2, 3], pruned=False)
    gate = HeadGate(heads, {2: 10.0, 3: 10.0})  # layer 2 fires whenever it is on
    dear = GateBudget(GatePrices(1.0, 0.5, 1.0, 0.5, call=100.0), min_calls=3, margin=0.0)
    tight = GateBudget(GatePrices(1.0, 0.5, 1.0, 0.5, call=0.5), min_calls=2, margin=0.0)
    switched = 0
    for prompt in PROMPTS:
        reference = hf_greedy(model, prompt, 30)
        out = SelfSpeculativeDecoding(adapter, gate, max_draft=3, budget=dear).generate(torch.tensor(prompt), 30)
        assert out.tokens == reference
        # Layer 2 drafts 3 times and goes off; only then is layer 3 asked (3 times), then plain decoding.
        assert out.switched_off == {2: 3, 3: 3} and out.gate_calls == 6
        out = SelfSpeculativeDecoding(adapter, gate, max_draft=3, budget=tight).generate(torch.tensor(prompt), 30)
        assert out.tokens == reference
        switched += len(out.switched_off)
    assert switched > 0


def test_projected_kv_equals_what_the_layer_caches(arch: str) -> None:
    """The copy fill's K/V projection (fused Phi-3 projections, Gemma's key norm, per-type rotary) gives the
    K/V the layer itself writes to its cache for the same input."""
    from beexformer.llm.kv_cache import PositionalKVCache

    adapter = adapter_for(tiny_model(arch))
    hidden = torch.randn(1, 5, adapter.hidden_size, dtype=torch.float64)
    positions = torch.arange(3, 8).view(1, 5)
    rotary = adapter.rotary_embeddings(hidden, positions)
    mask = position_mask(positions[0], positions[0], hidden.dtype)
    for layer in range(adapter.num_layers):
        cache = PositionalKVCache(adapter.num_layers)
        adapter.run_layer(layer, hidden, positions, rotary, mask, cache)
        k, v = adapter.project_kv(layer, hidden, rotary)
        torch.testing.assert_close(k, cache.keys[layer])
        torch.testing.assert_close(v, cache.values[layer])


def test_unsupported_architecture_fails_at_load_naming_it() -> None:
    from transformers import OPTConfig, OPTForCausalLM

    from beexformer.errors import ConfigError

    model = OPTForCausalLM(
        OPTConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            ffn_dim=32,
            word_embed_proj_dim=16,
        )
    )
    with pytest.raises(ConfigError, match=r"unsupported architecture OPTForCausalLM \(model_type 'opt'\)"):
        adapter_for(model)


def test_bidirectional_gemma_is_refused_at_load() -> None:
    from beexformer.errors import ConfigError

    model = tiny_model("gemma3")
    model.config.use_bidirectional_attention = True
    with pytest.raises(ConfigError, match="attends bidirectionally"):
        adapter_for(model)
