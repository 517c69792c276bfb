"""The Selective Learn-Forget Network (docs/design.md section 3) and the plain feed-forward it replaces.

Both follow one interface, `module(h: [B, T, d]) -> [B, T, d]`, so a variant (for example the "two forget
gates and one selective learning gate" reading of the paper) can be added without touching the block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beexformer.layers.binary_linear import linear_from_config


class SLFN(nn.Module):
    """SLFN(h) = s2(sigmoid(s1 h)) * f2(tanh(f1 h)): a learn/forget branch gating a selective branch."""

    def __init__(self, config) -> None:
        super().__init__()
        d, d_ff = config.d_model, config.d_ff
        self.s1 = linear_from_config(config, d, d_ff, name="s1")
        self.s2 = linear_from_config(config, d_ff, d, name="s2")  # reads a sigmoid: unsigned, centred on 0.5
        self.f1 = linear_from_config(config, d, d_ff, name="f1")
        self.f2 = linear_from_config(config, d_ff, d, name="f2")

    def forward(self, h: Tensor) -> Tensor:
        selective = self.s2(torch.sigmoid(self.s1(h)))
        candidate = self.f2(torch.tanh(self.f1(h)))
        return selective * candidate


class FeedForward(nn.Module):
    """The standard transformer FFN, lin2(gelu(lin1 h)): BERT's (exact erf GELU), and the "without SLFN"
    ablation."""

    def __init__(self, config) -> None:
        super().__init__()
        self.lin1 = linear_from_config(config, config.d_model, config.d_ff, name="lin1")
        # GELU outputs are >= -0.17: the learned quantizers use the unsigned set, from 0 or (act_gelu_floor)
        # from GELU's minimum; the mean-sign does neither
        self.lin2 = linear_from_config(config, config.d_ff, config.d_model, name="lin2")

    def forward(self, h: Tensor) -> Tensor:
        return self.lin2(F.gelu(self.lin1(h)))  # approximate="none": the erf form


class FeedForwardWithSLFN(FeedForward):
    """FFN(h) + g * SLFN(h), g a per-channel gate initialised to 0 (ffn="ffn_slfn").

    With g = 0 the module is exactly the FFN, so a pretrained checkpoint's function is unchanged at step 0;
    the gate (not a zero-initialised SLFN weight) starts at 0 because a 1-bit layer with W = 0 has alpha = 0
    and gets no gradient at all, while the gate's gradient, sum(SLFN(h) * dL/dout), is non-zero at once.
    """

    def __init__(self, config) -> None:
        super().__init__(config)
        self.slfn = SLFN(config)
        self.slfn_gate = nn.Parameter(torch.zeros(config.d_model))

    def forward(self, h: Tensor) -> Tensor:
        return super().forward(h) + self.slfn_gate * self.slfn(h)


FFN_KINDS: dict[str, type[nn.Module]] = {"slfn": SLFN, "ffn": FeedForward, "ffn_slfn": FeedForwardWithSLFN}


def build_ffn(config) -> nn.Module:
    return FFN_KINDS[config.ffn](config)
