"""Layer-by-layer forward passes through a causal LM's own decoder layers.

`trace` runs whole sequences (analysis, head training) and returns the hidden state after each layer and,
optionally, after the attention sub-layer of each block. Masks are built from absolute positions so the same
function also serves the decoders in `generation/`, whose rows are not always in position order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from beexformer.llm.adapters import ModelAdapter


def position_mask(
    query_pos: torch.Tensor, key_pos: torch.Tensor, dtype: torch.dtype, window: int | None = None
) -> torch.Tensor:
    """Additive mask [1, 1, q, k]: row r may attend to key c iff position(c) <= position(r), and, in a
    sliding-window layer, position(r) - window < position(c)."""
    allowed = key_pos[None, :] <= query_pos[:, None]
    if window is not None:
        allowed &= key_pos[None, :] > query_pos[:, None] - window
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


class LayerMasks:
    """The masks of one set of query rows at every layer, built once per distinct sliding window."""

    def __init__(self, adapter: ModelAdapter, query_pos: torch.Tensor, dtype: torch.dtype) -> None:
        self.adapter = adapter
        self.query_pos = query_pos
        self.dtype = dtype
        self._by_window: dict[int | None, torch.Tensor] = {}

    def full(self, index: int) -> torch.Tensor:
        """Mask of the rows against themselves (no cache) at layer `index`."""
        window = self.adapter.window(index)
        if window not in self._by_window:
            self._by_window[window] = position_mask(self.query_pos, self.query_pos, self.dtype, window)
        return self._by_window[window]


@dataclass
class Trace:
    """Hidden states of a batch [B, T, d]: `layers[l]` after l layers (l = 1..L); `attn[l]` after the
    attention sub-layer of layer l (1-based), when asked for."""

    layers: dict[int, torch.Tensor]
    attn: dict[int, torch.Tensor] = field(default_factory=dict)


def trace(
    adapter: ModelAdapter,
    input_ids: torch.Tensor,
    keep: Iterable[int] | None = None,
    sublayer: bool = False,
) -> Trace:
    """Run all layers on input_ids [B, T] (no cache); keep the outputs of the layers in `keep` (default all).

    The last layer's output is always kept, before the final norm.
    """
    num = adapter.num_layers
    wanted = set(range(1, num + 1)) if keep is None else set(keep) | {num}
    bsz, seq = input_ids.shape
    positions = torch.arange(seq).expand(bsz, seq)
    hidden = adapter.embed(input_ids, positions)
    rotary = adapter.rotary_embeddings(hidden, positions)
    masks = LayerMasks(adapter, torch.arange(seq), hidden.dtype)
    out = Trace(layers={})
    for index in range(num):
        mask = masks.full(index)
        if sublayer:
            captured: list[torch.Tensor] = []
            handle = adapter.attention_module(index).register_forward_hook(
                lambda _m, _i, output, store=captured: store.append(output[0])
            )
            try:
                new_hidden = adapter.run_layer(index, hidden, positions, rotary, mask, None)
            finally:
                handle.remove()
            # The residual stream after attention: input + attention delta (also for GPT-NeoX's parallel
            # residual, where it is the state the MLP branch has not touched yet).
            out.attn[index + 1] = hidden + captured[0]
            hidden = new_hidden
        else:
            hidden = adapter.run_layer(index, hidden, positions, rotary, mask, None)
        if index + 1 in wanted:
            out.layers[index + 1] = hidden
    return out
