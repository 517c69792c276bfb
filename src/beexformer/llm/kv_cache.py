"""A per-layer KV cache that records the absolute position of every entry.

Early exit leaves layers behind: a token that exits at layer e has no K/V in layers e..L-1 until they are
recomputed, and they are recomputed together with a later token, so entries of one layer are not appended in
position order. Keeping each entry's position lets attention masks be built from positions instead of from
array order, and lets self-speculative decoding crop every layer to a position after a rejected draft.

The model's attention modules only call `update(keys, values, layer_idx)`, so this class stands in for a
Hugging Face `Cache` when the decoder layers are called one at a time.
"""

from __future__ import annotations

import torch


class PositionalKVCache:
    """K/V tensors [1, heads, T_l, head_dim] and positions [T_l] per layer, batch size 1."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.positions: list[torch.Tensor] = [torch.empty(0, dtype=torch.long) for _ in range(num_layers)]

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: object,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append new K/V for `layer_idx` and return all of that layer's K/V (the HF Cache protocol)."""
        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        if old_k is None or old_v is None:
            self.keys[layer_idx], self.values[layer_idx] = key_states, value_states
        else:
            self.keys[layer_idx] = torch.cat([old_k, key_states], dim=-2)
            self.values[layer_idx] = torch.cat([old_v, value_states], dim=-2)
        return self.keys[layer_idx], self.values[layer_idx]  # type: ignore[return-value]

    def add_positions(self, layer_idx: int, positions: torch.Tensor) -> None:
        """Record the positions of the rows about to be appended to `layer_idx` (before the layer runs)."""
        self.positions[layer_idx] = torch.cat([self.positions[layer_idx], positions])

    def key_positions(self, layer_idx: int) -> torch.Tensor:
        return self.positions[layer_idx]

    def crop(self, max_position: int) -> None:
        """Drop every entry at a position > max_position in every layer (after a rejected draft)."""
        for layer, pos in enumerate(self.positions):
            keep = pos <= max_position
            if bool(keep.all()):
                continue
            self.positions[layer] = pos[keep]
            k, v = self.keys[layer], self.values[layer]
            if k is not None and v is not None:
                self.keys[layer], self.values[layer] = k[:, :, keep], v[:, :, keep]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.positions[layer_idx].numel())

    def layer_lengths(self) -> list[int]:
        return [int(p.numel()) for p in self.positions]
