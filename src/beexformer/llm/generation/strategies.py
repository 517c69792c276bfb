"""The three decoding strategies: full depth, early exit, and self-speculative (DSSD-style).

All three use the same layer-wise decoder, so a comparison between them measures the exit policy and not
two different forward implementations. Batch size is 1: each prompt is decoded on its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from beexformer.llm.adapters import ModelAdapter
from beexformer.llm.gates import HeadGate
from beexformer.llm.generation.base import DecodingStrategy, GenerationResult, record_work, truncate_at_eos
from beexformer.llm.generation.engine import Gate, LayerwiseDecoder


def _done(tokens: list[int], max_new_tokens: int, eos_token_id: int | None) -> bool:
    return len(tokens) >= max_new_tokens or (eos_token_id is not None and eos_token_id in tokens)


@dataclass(frozen=True)
class GatePrices:
    """The cost model's unit costs (any one unit, e.g. ms measured on this CPU) that price a gate's decisions."""

    layer: float  # one decoder layer, one row
    extra_row: float  # one more row in a layer call: what a deferred layer of an exited or drafted token costs
    head: float  # final norm + head, one row
    extra_head_row: float  # one more row in a head call (a draft's row in the verify pass)
    call: float  # one gate call (entropy gate: its exit head; probe gate: the probe)
    fired: float = 0.0  # the extra of a call that fires (probe gate: the exit head it then runs)

    def step(self, num_layers: int) -> float:
        """One token of plain decoding."""
        return num_layers * self.layer + self.head

    def exit_gain(self, layer: int, num_layers: int) -> float:
        """An exited token skips the head, and its later layers ride along as an extra row of a later pass."""
        return self.head + (num_layers - layer) * (self.layer - self.extra_row)

    def draft_cost(self, layer: int, num_layers: int) -> float:
        """Work a draft from `layer` costs whether it is kept or not: its first layers, an extra row in the
        verify pass's later layers and its row of the head."""
        return layer * self.layer + (num_layers - layer) * self.extra_row + self.extra_head_row

    def draft_gain(self, layer: int, num_layers: int) -> float:
        """A kept draft is a token that needed no step of its own."""
        return self.step(num_layers) - self.draft_cost(layer, num_layers)


@dataclass(frozen=True)
class GateBudget:
    """When a gate layer is switched off during one generation: once it has been asked `min_calls` times and
    its balance (what its exits or kept drafts saved, minus its calls and its rejected drafts, at `prices`)
    is more than `margin` plain steps in the red. The margin is the hysteresis: one rejected draft or a few
    unanswered calls early on do not switch off a gate that pays on average."""

    prices: GatePrices
    min_calls: int = 8
    margin: float = 0.1


class GateLedger:
    """Per gate layer, during one generation: the running balance of `budget` and the layers still on
    (`active`, the set the decoder checks at every layer, so a layer switched off mid-step is not asked
    again). Off is for the rest of the generation. Output stays greedy's: self-speculation verifies every
    token whichever layers draft, and early exit only exits less."""

    def __init__(self, budget: GateBudget, layers: frozenset[int], num_layers: int) -> None:
        self.budget = budget
        self.num_layers = num_layers
        self.active = set(layers)
        self.calls: Counter[int] = Counter()
        self.balance: dict[int, float] = dict.fromkeys(layers, 0.0)
        self.switched_off: dict[int, int] = {}  # layer -> gate calls it had made when it was switched off

    def watch(self, gate: Gate) -> Gate:
        """`gate`, charging every call to its layer."""
        prices = self.budget.prices

        def asked(depth: int, hidden: torch.Tensor) -> int | None:
            token = gate(depth, hidden)
            self.calls[depth] += 1
            if token is None:
                self._post(depth, -prices.call)
            else:  # judged with its exit or its draft's verdict, which are booked next
                self.balance[depth] -= prices.call + prices.fired
            return token

        return asked

    def exited(self, layer: int) -> None:
        self._post(layer, self.budget.prices.exit_gain(layer, self.num_layers))

    def verified(self, depths: list[int], accepted: int) -> None:
        """Drafts from `depths` (in order) of which the first `accepted` were kept."""
        prices, num = self.budget.prices, self.num_layers
        for i, layer in enumerate(depths):
            self._post(layer, prices.draft_gain(layer, num) if i < accepted else -prices.draft_cost(layer, num))

    def _post(self, layer: int, amount: float) -> None:
        self.balance[layer] += amount
        budget = self.budget
        losing = self.balance[layer] < -budget.margin * budget.prices.step(self.num_layers)
        if layer in self.active and self.calls[layer] >= budget.min_calls and losing:
            self.active.discard(layer)
            self.switched_off[layer] = self.calls[layer]


def _ledger(budget: GateBudget | None, gate: Gate, layers: frozenset[int], num: int) -> tuple[GateLedger | None, Gate]:
    """A fresh ledger for one generation and the gate the decoder should call (`gate` itself without one)."""
    if budget is None:
        return None, gate
    ledger = GateLedger(budget, layers, num)
    return ledger, ledger.watch(gate)


class FullDecoding(DecodingStrategy):
    """Plain greedy decoding through every layer (the reference the other strategies are held to)."""

    name = "full"

    def _generate(self, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None) -> GenerationResult:
        num = self.adapter.num_layers
        state, last = self.decoder.prefill(input_ids)
        tokens = [int(self.next_token(last))]
        position = input_ids.numel()
        while not _done(tokens, max_new_tokens, eos_token_id):
            out = self.decoder.step(state, tokens[-1], position)
            position += 1
            tokens.append(int(self.next_token(out.final_hidden[-1])))
        result = GenerationResult(tokens, [num] * len(tokens), num, full_passes=len(tokens))
        result.head_calls = {1: len(tokens)}
        record_work(result, state)
        return truncate_at_eos(result, max_new_tokens, eos_token_id)


class EarlyExitDecoding(DecodingStrategy):
    """A token whose gate fires takes the exit head's prediction; its deeper layers are recomputed lazily with
    the next full-depth token (engine.py), so the KV cache stays exact. `max_pending` bounds how many exited
    tokens may wait for their deeper layers. With kv_fill="copy" the skipped layers get K/V projected from the
    exit hidden state instead (cheaper, approximate). With a `budget`, a gate layer whose exits do not pay for
    its calls is switched off for the rest of the generation (`GateLedger`)."""

    name = "early-exit"

    def __init__(
        self,
        adapter: ModelAdapter,
        gate: HeadGate,
        max_pending: int = 16,
        kv_fill: str = "recompute",
        budget: GateBudget | None = None,
    ) -> None:
        super().__init__(adapter)
        self.decoder = LayerwiseDecoder(adapter, kv_fill)
        self.gate = gate
        self.max_pending = max_pending
        self.budget = budget

    def _generate(self, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None) -> GenerationResult:
        num = self.adapter.num_layers
        state, last = self.decoder.prefill(input_ids)
        tokens, depths = [int(self.next_token(last))], [num]
        position, full_passes = input_ids.numel(), 1
        ledger, watched = _ledger(self.budget, self.gate, self.gate.layers, num)
        layers = ledger.active if ledger is not None else self.gate.layers
        while not _done(tokens, max_new_tokens, eos_token_id):
            gate = watched if len(state.pending_pos) < self.max_pending else None
            out = self.decoder.step(state, tokens[-1], position, gate, layers)
            position += 1
            if out.exited:
                tokens.append(int(out.token))  # type: ignore[arg-type]
                if ledger is not None:
                    ledger.exited(out.depth)
            else:
                tokens.append(int(self.next_token(out.final_hidden[-1])))
                full_passes += 1
            depths.append(out.depth)
        result = GenerationResult(tokens, depths, num, full_passes=full_passes)
        result.head_calls = {1: full_passes}
        result.switched_off = dict(ledger.switched_off) if ledger is not None else {}
        record_work(result, state)
        return truncate_at_eos(result, max_new_tokens, eos_token_id)


@dataclass
class DraftStatistics:
    """Drafts tried and kept per gate layer: what the adaptive policy of `SelfSpeculativeDecoding` judges a
    layer by. Pass one object to several generations (`generate(..., stats=...)`) so that a layer found
    unprofitable on earlier answers stays off for later ones instead of being re-learnt in every answer."""

    tried: Counter[int] = field(default_factory=Counter)
    kept: Counter[int] = field(default_factory=Counter)

    def record(self, depths: list[int], accepted: int) -> None:
        """A draft after the first rejection counts as lost: its work was wasted."""
        for i, depth in enumerate(depths):
            self.tried[depth] += 1
            self.kept[depth] += i < accepted

    def acceptance(self, layer: int) -> float | None:
        return self.kept[layer] / self.tried[layer] if self.tried[layer] else None


class SelfSpeculativeDecoding(DecodingStrategy):
    """Draft with the exit heads while they are confident; the first token they are unsure about runs to the
    last layer together with all drafts (one verify pass that reuses the drafts' early-layer KV); keep the
    longest prefix of drafts that the full model agrees with, plus the full model's own next token; crop the
    cache after a rejection. Greedy output is identical to plain greedy decoding.

    Drafting stops as soon as the gate does not fire (DSSD's dynamic draft length) or after `max_draft`. With a
    `budget`, a gate layer whose kept drafts do not pay for its calls and its rejected drafts is switched off
    for the rest of the generation (`GateLedger`).
    """

    name = "self-speculative"

    def __init__(
        self,
        adapter: ModelAdapter,
        gate: HeadGate,
        max_draft: int = 8,
        min_acceptance: Mapping[int, float] | None = None,
        warmup_drafts: int = 4,
        budget: GateBudget | None = None,
    ) -> None:
        super().__init__(adapter)
        self.gate = gate
        self.max_draft = max_draft
        self.budget = budget
        # Per gate layer: the acceptance rate below which drafting from it loses time (see
        # break_even_acceptance). After `warmup_drafts` drafts from a layer, a layer whose running acceptance
        # is below it stops drafting: for the rest of the generation, or for every generation that shares the
        # same DraftStatistics.
        self.min_acceptance = dict(min_acceptance or {})
        self.warmup_drafts = warmup_drafts

    def _generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        eos_token_id: int | None,
        stats: DraftStatistics | None = None,
    ) -> GenerationResult:
        """`stats` (via `generate(..., stats=...)`) carries the adaptive policy's counts across generations;
        by default each generation starts afresh. The output is greedy's whatever the counts."""
        num = self.adapter.num_layers
        stats = stats if stats is not None else DraftStatistics()
        state, last = self.decoder.prefill(input_ids)
        result = GenerationResult([int(self.next_token(last))], [num], num, full_passes=1, head_calls={1: 1})
        base = input_ids.numel()  # position of the first input not yet verified
        drafts: list[int] = []
        draft_depths: list[int] = []
        layers = {layer for layer in self.gate.layers if self._profitable(stats, layer)}
        ledger, gate = _ledger(self.budget, self.gate, self.gate.layers, num)
        while not _done(result.tokens, max_new_tokens, eos_token_id):
            room = len(result.tokens) + len(drafts) + 1 < max_new_tokens and len(drafts) < self.max_draft
            token = drafts[-1] if drafts else result.tokens[-1]
            on = layers & ledger.active if ledger is not None else layers
            out = self.decoder.step(state, token, base + len(drafts), gate if room else None, on)
            if out.exited:
                drafts.append(int(out.token))  # type: ignore[arg-type]
                draft_depths.append(out.depth)
                continue
            # Verify: out.final_hidden rows are positions base .. base+len(drafts); row i predicts draft i.
            preds = self.next_token(out.final_hidden, result).tolist()
            accepted = 0
            while accepted < len(drafts) and preds[accepted] == drafts[accepted]:
                accepted += 1
            if accepted < len(drafts):
                state.cache.crop(base + accepted)
            result.tokens.extend(drafts[:accepted] + [preds[accepted]])
            result.exit_depths.extend(draft_depths[:accepted] + [num])
            result.full_passes += 1
            if drafts:
                result.drafted += len(drafts)
                result.accepted += accepted
                result.draft_lengths.append(len(drafts))
                stats.record(draft_depths, accepted)
                if ledger is not None:
                    ledger.verified(draft_depths, accepted)
                layers = {layer for layer in layers if self._profitable(stats, layer)}
            base += accepted + 1
            drafts, draft_depths = [], []
        result.switched_off = dict(ledger.switched_off) if ledger is not None else {}
        record_work(result, state)
        return truncate_at_eos(result, max_new_tokens, eos_token_id)

    def _profitable(self, stats: DraftStatistics, layer: int) -> bool:
        """False once a layer has `warmup_drafts` drafts and a running acceptance below its floor."""
        floor = self.min_acceptance.get(layer)
        if floor is None or stats.tried[layer] < self.warmup_drafts:
            return True
        return stats.kept[layer] >= floor * stats.tried[layer]


def break_even_acceptance(
    layer: int, num_layers: int, row_cost: float, head_cost: float, head_row_cost: float
) -> float:
    """Acceptance rate at which drafting from `layer` neither gains nor loses time, in units of one decoder
    layer for one row (gate calls not counted): a kept draft gains `GatePrices.draft_gain`, a rejected one loses
    `draft_cost`, so p* = draft_cost / (L + head_cost) = (l + (L - l) row_cost + head_cost head_row_cost) /
    (L + head_cost)."""
    prices = GatePrices(1.0, row_cost, head_cost, head_cost * head_row_cost, 0.0)
    return prices.draft_cost(layer, num_layers) / prices.step(num_layers)
