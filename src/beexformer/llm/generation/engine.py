"""The layer-wise decoder shared by every strategy: one token at a time, exits allowed between layers, and a
KV cache that stays exact.

KV fill strategy (default): lazy recompute. When a token exits after layer e, its hidden state is kept as
*pending* at depth e and it gets no K/V in layers e..L-1 yet. The next token that runs layer j >= e takes every pending
row of depth j along: from layer j on they are computed together, in one call per layer, and their K/V are
written to the cache. So by the time any token attends to layer j, every earlier position has the K/V that a
full forward pass would have given it, and the cache is exactly that of plain decoding; only the tokens
chosen at exits can differ. The same mechanism is the verify pass of self-speculative decoding: draft tokens
are pending rows whose remaining layers run together with the first token the gate was unsure about.

Invariant (see `step`): pending groups are ordered by position with strictly decreasing depth, and every key
in layer j of the cache precedes every row that still lacks layer j, so a single row needs no mask (unless the
layer slides a window and the row is far enough along for keys to fall out of it).

Option `kv_fill="copy"`: instead, the exiting token's hidden state is projected through the K/V projections
of the layers it skipped right away (CALM-style state copying). Much cheaper per exit (two small matrix
products per skipped layer instead of the whole layer) but approximate: later tokens attend to K/V that a
full pass would not have produced. Self-speculative decoding always uses recompute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch

from beexformer.llm.adapters import ModelAdapter
from beexformer.llm.forward import LayerMasks, position_mask
from beexformer.llm.kv_cache import PositionalKVCache

# A gate sees (depth, hidden state of the current token after `depth` layers) and returns a token to exit
# with, or None to continue.
Gate = Callable[[int, torch.Tensor], "int | None"]


@dataclass
class DecodeState:
    """Everything one sequence's decoding carries between steps (batch size 1)."""

    cache: PositionalKVCache
    pending_pos: list[int] = field(default_factory=list)
    pending_depth: list[int] = field(default_factory=list)
    pending_hidden: list[torch.Tensor] = field(default_factory=list)
    # Work done, for the cost model: decoder-layer calls by number of rows, gate calls, K/V projections.
    layer_calls: Counter[int] = field(default_factory=Counter)
    gate_calls: int = 0
    kv_projections: int = 0

    def drop_pending_after(self, max_position: int) -> None:
        keep = [i for i, p in enumerate(self.pending_pos) if p <= max_position]
        self.pending_pos = [self.pending_pos[i] for i in keep]
        self.pending_depth = [self.pending_depth[i] for i in keep]
        self.pending_hidden = [self.pending_hidden[i] for i in keep]


@dataclass(frozen=True)
class StepOutcome:
    """What one step produced: an exit (token from the gate) or completed rows at the last layer."""

    exited: bool
    depth: int
    token: int | None
    final_hidden: torch.Tensor | None  # [n, d] before the final norm, rows in position order
    final_positions: list[int]


class LayerwiseDecoder:
    """Runs the model's own layers one by one for a single sequence; see the module docstring."""

    def __init__(self, adapter: ModelAdapter, kv_fill: str = "recompute") -> None:
        if kv_fill not in ("recompute", "copy"):
            raise ValueError(f"kv_fill must be 'recompute' or 'copy', got {kv_fill!r}")
        self.adapter = adapter
        self.kv_fill = kv_fill

    def prefill(self, input_ids: torch.Tensor) -> tuple[DecodeState, torch.Tensor]:
        """Run the prompt [T] through all layers; return the state and the last row's final hidden [d]."""
        adapter = self.adapter
        state = DecodeState(cache=PositionalKVCache(adapter.num_layers))
        seq = int(input_ids.numel())
        pos = torch.arange(seq)
        hidden = adapter.embed(input_ids.view(1, seq), pos.view(1, seq))
        rotary = adapter.rotary_embeddings(hidden, pos.view(1, seq))
        masks = LayerMasks(adapter, pos, hidden.dtype)
        for j in range(adapter.num_layers):
            state.cache.add_positions(j, pos)
            mask = masks.full(j) if seq > 1 else None
            hidden = adapter.run_layer(j, hidden, pos.view(1, seq), rotary, mask, state.cache)
        return state, hidden[0, -1]

    def step(
        self,
        state: DecodeState,
        token: int | None,
        position: int,
        gate: Gate | None = None,
        gate_layers: Collection[int] = (),
    ) -> StepOutcome:
        """Feed `token` at `position` (None: only finish the pending rows) and run layers until a gate fires
        or the last layer is done."""
        adapter = self.adapter
        num = adapter.num_layers
        if token is not None:
            hidden = adapter.embed(torch.tensor([[token]]), torch.tensor([[position]]))
            pos: list[int] = [position]
            start = 0
        else:
            if not state.pending_pos:
                raise ValueError("nothing to run: no token and no pending rows")
            hidden = torch.empty(1, 0, adapter.hidden_size, dtype=adapter.dtype)
            pos = []
            start = min(state.pending_depth)
        rotary = None
        pos_t = torch.tensor(pos, dtype=torch.long)
        for j in range(start, num):
            joined = self._join_pending(state, j)
            if joined is not None:
                hidden = torch.cat([joined[1], hidden], dim=1)
                pos = joined[0] + pos
                pos_t = torch.tensor(pos, dtype=torch.long)
                rotary = None
            if rotary is None:
                rotary = adapter.rotary_embeddings(hidden, pos_t.view(1, -1))
            mask = None
            window = adapter.window(j)
            # Every cache holds position 0, so a lone row at p misses a key only when p >= window.
            if len(pos) > 1 or (window is not None and pos[-1] >= window):
                keys = torch.cat([state.cache.key_positions(j), pos_t])
                mask = position_mask(pos_t, keys, hidden.dtype, window)
            state.cache.add_positions(j, pos_t)
            hidden = adapter.run_layer(j, hidden, pos_t.view(1, -1), rotary, mask, state.cache)
            state.layer_calls[len(pos)] += 1
            depth = j + 1
            if gate is not None and token is not None and depth < num and depth in gate_layers:
                state.gate_calls += 1
                chosen = gate(depth, hidden[0, -1])
                if chosen is not None:
                    if self.kv_fill == "copy":
                        self._copy_kv(state, hidden, pos_t, rotary, depth)
                        return StepOutcome(True, depth, int(chosen), None, [])
                    # Every row of this call stops here together and waits for a later token.
                    state.pending_pos.extend(pos)
                    state.pending_depth.extend([depth] * len(pos))
                    state.pending_hidden.extend(hidden[0].unbind(0))
                    return StepOutcome(True, depth, int(chosen), None, [])
        order = sorted(range(len(pos)), key=pos.__getitem__)
        final = hidden[0, order]
        return StepOutcome(False, num, None, final, [pos[i] for i in order])

    def _copy_kv(
        self, state: DecodeState, hidden: torch.Tensor, pos_t: torch.Tensor, rotary: object, depth: int
    ) -> None:
        """KV fill "copy": the skipped layers get K/V projected from the exit hidden state (approximate; the
        cache then differs from plain decoding, and so may later tokens)."""
        for j in range(depth, self.adapter.num_layers):
            k, v = self.adapter.project_kv(j, hidden, rotary)
            state.cache.add_positions(j, pos_t)
            state.cache.update(k, v, j)
            state.kv_projections += 1

    @staticmethod
    def _join_pending(state: DecodeState, depth: int) -> tuple[list[int], torch.Tensor] | None:
        """Remove and return the pending rows that stopped after `depth` layers: positions, hidden [1,k,d]."""
        idx = [i for i, d in enumerate(state.pending_depth) if d == depth]
        if not idx:
            return None
        positions = [state.pending_pos[i] for i in idx]
        hidden = torch.stack([state.pending_hidden[i] for i in idx])[None]
        rest = [i for i in range(len(state.pending_pos)) if i not in set(idx)]
        state.pending_pos = [state.pending_pos[i] for i in rest]
        state.pending_depth = [state.pending_depth[i] for i in rest]
        state.pending_hidden = [state.pending_hidden[i] for i in rest]
        return positions, hidden
