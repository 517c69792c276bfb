"""One BEExformer block: binarized self-attention then the SLFN, each with a residual and LayerNorm."""

from __future__ import annotations

from torch import Tensor, nn

from beexformer.layers.attention import BinaryMultiHeadSelfAttention
from beexformer.layers.slfn import build_ffn


class BEExBlock(nn.Module):
    """post-LN (the paper's predecessor): H = LN1(X + Drop(MHSA(X))); X' = LN2(H + Drop(SLFN(H))).
    pre-LN (option, steadier when binarized): H = X + Drop(MHSA(LN1 X)); X' = H + Drop(SLFN(LN2 H))."""

    def __init__(self, config) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.attn = BinaryMultiHeadSelfAttention(config)
        self.ffn = build_ffn(config)
        self.norm1 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.norm2 = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, attention_mask: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The block's output [B, T, d]; with `return_attention`, also its attention probabilities."""
        a, probs = self.attn(self.norm1(x) if self.pre_norm else x, attention_mask, return_weights=True)
        if self.pre_norm:
            h = x + self.dropout(a)
            out = h + self.dropout(self.ffn(self.norm2(h)))
        else:
            h = self.norm1(x + self.dropout(a))
            out = self.norm2(h + self.dropout(self.ffn(h)))
        return (out, probs) if return_attention else out
