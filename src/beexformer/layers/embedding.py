"""Token, position and segment embeddings; the token table may be 1-bit or int8, with a per-row scale."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beexformer.binarize import binarize_weight, blend, get_quantizer
from beexformer.positions import sinusoidal_table


def int8_rows(rows: Tensor, output_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: codes in [-127, 127] (as floats) and the scale max|row| / 127 * output_scale
    ([..., 1]), so that codes * scale is the looked-up vector, computed the same way by the packed runtime."""
    step = rows.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30) / 127.0
    codes = torch.round(rows / step).clamp(-127.0, 127.0)
    return codes, step * output_scale


class BinaryEmbedding(nn.Embedding):
    """nn.Embedding whose rows are alpha_row * sign(E_row) when bits=1, int8 codes times a per-row scale when
    bits=8 (straight-through gradient), and plain nn.Embedding rows when bits=32."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        bits: int = 1,
        quantizer: str = "approx_sign",
        init_std: float = 0.02,
        output_scale: float = 1.0,
    ):
        super().__init__(num_embeddings, embedding_dim)
        # A constant factor on every looked-up vector, folded into the per-row scale (so the packed
        # runtime, which stores scale * output_scale, computes bit-identical vectors).
        self.output_scale = output_scale
        if bits not in (1, 8, 32):
            raise ValueError(f"embedding bits must be 1, 8 or 32, got {bits}")
        self.bits = bits
        self.quantizer = get_quantizer(quantizer)
        self.binarization_level = 1.0  # below 1 only inside a training step with the ramp (training/ramp.py)
        nn.init.normal_(self.weight, std=init_std)

    @property
    def is_binary(self) -> bool:
        return self.bits == 1

    def twin_weight(self) -> Tensor:
        """The table a float twin (bits=32, same output_scale) needs to compute the same vectors."""
        if self.bits == 1:
            return binarize_weight(self.weight, self.quantizer, "row")
        if self.bits == 8:
            codes, scale = int8_rows(self.weight.detach())
            return codes * scale
        return self.weight

    def effective_weight(self) -> Tensor:
        """The table the forward pass looks rows up in (output_scale included)."""
        return self._lookup(self.weight) if self.bits < 32 else self.weight * self.output_scale

    def forward(self, ids: Tensor) -> Tensor:
        if self.bits < 32:
            # Quantize only the rows this batch looks up: the full table can be large.
            return self._lookup(F.embedding(ids, self.weight))
        return super().forward(ids) * self.output_scale

    def _lookup(self, rows: Tensor) -> Tensor:
        """alpha_row * output_scale * sign(rows), blended with the float rows below binarization level 1; at
        8 bits the int8 rows, with a straight-through gradient (the rounding is too fine to need a ramp)."""
        if self.bits == 8:
            codes, scale = int8_rows(rows.detach(), self.output_scale)
            floats = rows * self.output_scale
            # + (floats - floats.detach()) adds exactly 0 and the identity gradient: the value stays the one
            # the packed runtime computes, bit for bit (floats + (q - floats).detach() may round differently).
            return codes * scale + (floats - floats.detach())
        binarized = rows.abs().mean(dim=-1, keepdim=True) * self.output_scale * self.quantizer(rows)
        return blend(rows * self.output_scale, binarized, self.binarization_level)


class BEExEmbeddings(nn.Module):
    """X0 = LayerNorm(combine(TokEmb(ids), PosEnc(positions)) + SegEmb(segments)).

    combine="add" sums d-wide token and position vectors; combine="concat" (the paper's wording)
    concatenates a (d - d/4)-wide token vector with a d/4-wide position vector.

    With sinusoidal positions (values of amplitude 1) the token vectors are initialised with std 1/sqrt(d) and
    multiplied by sqrt(d), as in Vaswani et al., so that both have the same scale: with the usual std 0.02 the
    positions drown the tokens after the sum and the LayerNorm, and the model does not learn (measured: SST-2
    dev accuracy stuck at 51 % after 250 steps, against 76 % with learned positions).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_len: int,
        *,
        position: str = "sinusoidal",
        combine: str = "add",
        n_segments: int = 2,
        bits: int = 1,
        quantizer: str = "approx_sign",
        dropout: float = 0.1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.combine = combine
        pos_dim = d_model if combine == "add" else d_model // 4
        tok_dim = d_model if combine == "add" else d_model - pos_dim
        sinusoidal = position != "learned"
        self.token = BinaryEmbedding(
            vocab_size,
            tok_dim,
            bits=bits,
            quantizer=quantizer,
            init_std=1.0 / math.sqrt(tok_dim) if sinusoidal else 0.02,
            output_scale=math.sqrt(tok_dim) if sinusoidal else 1.0,
        )
        self.position_kind = position
        if position == "learned":
            self.position = nn.Embedding(max_len, pos_dim)
            nn.init.normal_(self.position.weight, std=0.02)
        else:
            self.register_buffer(
                "position_table", torch.from_numpy(sinusoidal_table(max_len, pos_dim)), persistent=False
            )
        self.segment = nn.Embedding(n_segments, d_model) if n_segments > 0 else None
        if self.segment is not None:
            nn.init.normal_(self.segment.weight, std=0.02)
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def positions(self, length: int) -> Tensor:
        if self.position_kind == "learned":
            return self.position.weight[:length]
        return self.position_table[:length]

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        tok = self.token(input_ids)
        pos = self.positions(input_ids.shape[1]).unsqueeze(0)
        x = tok + pos if self.combine == "add" else torch.cat([tok, pos.expand(tok.shape[0], -1, -1)], dim=-1)
        if self.segment is not None and token_type_ids is not None:
            x = x + self.segment(token_type_ids)
        return self.dropout(self.norm(x))
