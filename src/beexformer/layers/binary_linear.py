"""BinaryLinear: a drop-in replacement for nn.Linear with 1-bit weights and optionally 1-bit inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beexformer.binarize import (
    ScaleMode,
    binarize_activation,
    binarize_weight,
    get_quantizer,
)


class BinaryLinear(nn.Linear):
    """nn.Linear whose weight (weight_bits=1) and input (act_bits=1) are binarized in the forward pass.

    The real-valued latent weight stays float32 for the optimizer; only its sign bits and per-row scale
    matter for inference (see `beexformer.engine.export`). With weight_bits=32 and act_bits=32 the layer
    is exactly nn.Linear.

    `act_centre` is the centre c of the input binarization x_q = c + beta * sign(x - c): 0.5 after a
    sigmoid, 0 elsewhere.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        weight_bits: int = 1,
        act_bits: int = 32,
        weight_quantizer: str = "approx_sign",
        act_quantizer: str = "approx_sign",
        weight_scale: ScaleMode = "row",
        act_centre: float = 0.0,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if weight_bits not in (1, 32) or act_bits not in (1, 32):
            raise ValueError(f"weight_bits and act_bits must be 1 or 32, got {weight_bits}, {act_bits}")
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.weight_scale_mode: ScaleMode = weight_scale
        self.act_centre = act_centre
        self.weight_quantizer = get_quantizer(weight_quantizer)
        self.act_quantizer = get_quantizer(act_quantizer)

    def effective_weight(self) -> Tensor:
        """The weight the forward pass multiplies by: alpha * sign(W) when binarized, else W."""
        if self.weight_bits == 1:
            return binarize_weight(self.weight, self.weight_quantizer, self.weight_scale_mode)
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        if self.act_bits == 1:
            x = binarize_activation(x, self.act_quantizer, self.act_centre)
        return F.linear(x, self.effective_weight(), self.bias)

    def twin_weight(self) -> Tensor:
        """The weight of the float twin of this layer (an nn.Linear computing the same product)."""
        return self.effective_weight()

    @property
    def is_binary(self) -> bool:
        return self.weight_bits == 1

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}, act_bits={self.act_bits}"

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> BinaryLinear:
        """Wrap an existing nn.Linear (its weights are copied) as a BinaryLinear."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer


def linear_from_config(config, in_features: int, out_features: int, *, act_centre: float = 0.0) -> BinaryLinear:
    """A BinaryLinear with the bit widths and quantizers of a `BEExformerConfig`."""
    return BinaryLinear(
        in_features,
        out_features,
        weight_bits=config.weight_bits,
        act_bits=config.act_bits,
        weight_quantizer=config.weight_quantizer,
        act_quantizer=config.act_quantizer,
        weight_scale=config.weight_scale,
        act_centre=act_centre,
    )
