"""A small base class for decoding strategies (like LayerSkip's generation strategies) and their result."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from beexformer.llm.adapters import ModelAdapter
from beexformer.llm.generation.engine import DecodeState, LayerwiseDecoder


@dataclass
class GenerationResult:
    """Generated token ids and what the strategy did to produce them."""

    tokens: list[int]
    exit_depths: list[int]  # layers run before each generated token was chosen (L = full depth)
    num_layers: int
    seconds: float = 0.0
    full_passes: int = 0  # steps that reached the last layer
    drafted: int = 0  # self-speculative: draft tokens proposed
    accepted: int = 0  # self-speculative: draft tokens the full model confirmed
    draft_lengths: list[int] = field(default_factory=list)
    switched_off: dict[int, int] = field(default_factory=dict)  # gate layer -> its calls when its ledger turned it off
    # Work done (cost model): decoder-layer calls by rows, head calls by rows, gate calls, K/V projections.
    layer_calls: dict[int, int] = field(default_factory=dict)
    head_calls: dict[int, int] = field(default_factory=dict)
    gate_calls: int = 0
    gate_head_runs: int = 0  # exit-head calls made by the gates (every call of an entropy gate; probe gates: fired)
    kv_projections: int = 0

    @property
    def mean_exit_layer(self) -> float:
        return sum(self.exit_depths) / max(1, len(self.exit_depths))

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class DecodingStrategy(ABC):
    """Greedy decoding of one prompt with the model's own layers; subclasses decide when to exit."""

    name = "base"

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter
        self.decoder = LayerwiseDecoder(adapter)

    def next_token(self, final_hidden: torch.Tensor, work: GenerationResult | None = None) -> torch.Tensor:
        """Greedy tokens of final hidden states [..., d] through the model's own norm and head."""
        if work is not None:
            rows = 1 if final_hidden.dim() == 1 else int(final_hidden.shape[0])
            work.head_calls[rows] = work.head_calls.get(rows, 0) + 1
        return self.adapter.greedy_tokens(final_hidden)

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None = None, **options: Any
    ) -> GenerationResult:
        """Generate up to max_new_tokens after input_ids [T] (stops after eos_token_id if given); `options`
        are the strategy's own (e.g. `stats` of SelfSpeculativeDecoding)."""
        gate = getattr(self, "gate", None)
        runs_before = getattr(gate, "head_runs", None)
        start = time.perf_counter()
        result = self._generate(input_ids.view(-1), max_new_tokens, eos_token_id, **options)
        result.seconds = time.perf_counter() - start
        # A probe gate counts the head calls it lets through; an entropy gate runs its head at every call.
        result.gate_head_runs = result.gate_calls if runs_before is None else gate.head_runs - runs_before  # type: ignore[union-attr]
        return result

    @abstractmethod
    def _generate(
        self, input_ids: torch.Tensor, max_new_tokens: int, eos_token_id: int | None, **options: Any
    ) -> GenerationResult:
        raise NotImplementedError


def record_work(result: GenerationResult, state: DecodeState) -> None:
    """Copy the decoder's work counters into the result."""
    result.layer_calls = dict(state.layer_calls)
    result.gate_calls = state.gate_calls
    result.kv_projections = state.kv_projections


def truncate_at_eos(result: GenerationResult, max_new_tokens: int, eos_token_id: int | None) -> GenerationResult:
    """Cut the tokens (and per-token records) after max_new_tokens or the first eos."""
    end = min(len(result.tokens), max_new_tokens)
    if eos_token_id is not None and eos_token_id in result.tokens[:end]:
        end = result.tokens.index(eos_token_id) + 1
    result.tokens = result.tokens[:end]
    result.exit_depths = result.exit_depths[:end]
    return result
