"""Multi-head self-attention with binarized Q, K, V and output projections; scores and softmax in float."""

from __future__ import annotations

import math

from torch import Tensor, nn

from beexformer.layers.binary_linear import linear_from_config


class BinaryMultiHeadSelfAttention(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        d, h = config.d_model, config.n_heads
        if d % h:
            raise ValueError(f"d_model={d} must be divisible by n_heads={h}")
        self.n_heads, self.head_dim = h, d // h
        self.q = linear_from_config(config, d, d, name="q")
        self.k = linear_from_config(config, d, d, name="k")
        self.v = linear_from_config(config, d, d, name="v")
        self.o = linear_from_config(config, d, d, name="o")
        self.dropout = nn.Dropout(config.dropout)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B, h, T, dh]

    def forward(
        self, x: Tensor, attention_mask: Tensor, return_weights: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x: [B, T, d]; attention_mask: [B, T] with 1 for real tokens and 0 for padding. With
        `return_weights`, also the attention probabilities [B, h, T, T] before dropout (for distillation)."""
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, float("-inf"))
        probs = scores.softmax(dim=-1)
        context = (self.dropout(probs) @ v).transpose(1, 2).reshape(x.shape)
        out = self.o(context)
        return (out, probs) if return_weights else out
