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
from beexformer.llm.generation.engine import LayerwiseDecoder


def _done(tokens: list[int], max_new_tokens: int, eos_token_id: int | None) -> bool:
    return len(tokens) >= max_new_tokens or (eos_token_id is not None and eos_token_id in tokens)


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
    exit hidden state instead (cheaper, approximate)."""

    name = "early-exit"

    def __init__(
        self, adapter: ModelAdapter, gate: HeadGate, max_pending: int = 16, kv_fill: str = "recompute"
    ) -> None:
        super().__init__(adapter)
        self.decoder = LayerwiseDecoder(adapter, kv_fill)
        self.gate = gate
        self.max_pending = max_pending

    def _generate(self, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None) -> GenerationResult:
        num = self.adapter.num_layers
        state, last = self.decoder.prefill(input_ids)
        tokens, depths = [int(self.next_token(last))], [num]
        position, full_passes = input_ids.numel(), 1
        layers = self.gate.layers
        while not _done(tokens, max_new_tokens, eos_token_id):
            gate = self.gate if len(state.pending_pos) < self.max_pending else None
            out = self.decoder.step(state, tokens[-1], position, gate, layers)
            position += 1
            if out.exited:
                tokens.append(int(out.token))  # type: ignore[arg-type]
            else:
                tokens.append(int(self.next_token(out.final_hidden[-1])))
                full_passes += 1
            depths.append(out.depth)
        result = GenerationResult(tokens, depths, num, full_passes=full_passes)
        result.head_calls = {1: full_passes}
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

    Drafting stops as soon as the gate does not fire (DSSD's dynamic draft length) or after `max_draft`.
    """

    name = "self-speculative"

    def __init__(
        self,
        adapter: ModelAdapter,
        gate: HeadGate,
        max_draft: int = 8,
        min_acceptance: Mapping[int, float] | None = None,
        warmup_drafts: int = 4,
    ) -> None:
        super().__init__(adapter)
        self.gate = gate
        self.max_draft = max_draft
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
        while not _done(result.tokens, max_new_tokens, eos_token_id):
            room = len(result.tokens) + len(drafts) + 1 < max_new_tokens and len(drafts) < self.max_draft
            token = drafts[-1] if drafts else result.tokens[-1]
            out = self.decoder.step(state, token, base + len(drafts), self.gate if room else None, layers)
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
                layers = {layer for layer in layers if self._profitable(stats, layer)}
            base += accepted + 1
            drafts, draft_depths = [], []
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
    layer for one row: an accepted draft saves its (L - l) remaining one-row passes except the marginal cost
    of an extra row (row_cost each) and the head except its marginal row; a rejected draft loses its l layers,
    its extra rows and its head row. p* = (l + (L - l) row_cost + head_cost head_row_cost) / (L + head_cost).
    """
    lost = layer + (num_layers - layer) * row_cost + head_cost * head_row_cost
    return lost / (num_layers + head_cost)
