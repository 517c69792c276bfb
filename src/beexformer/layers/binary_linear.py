"""BinaryLinear: a drop-in replacement for nn.Linear with 1-bit weights and optionally quantized inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from beexformer.binarize import (
    ScaleMode,
    binarize_activation,
    binarize_weight,
    blend,
    get_quantizer,
)
from beexformer.quantizers import ElasticSign, LsqQuantizer

ACT_BITS = (1, 2, 4, 32)
ACT_BINARIZERS = ("mean_sign", "elastic")


class MeanSign(nn.Module):
    """The plain 1-bit activation: x_q = c + beta * sign(x - c), beta = mean|x - c| per token (no parameters)."""

    def __init__(self, quantizer: str, centre: float) -> None:
        super().__init__()
        self.quantizer, self.centre = get_quantizer(quantizer), centre

    def forward(self, x: Tensor) -> Tensor:
        return binarize_activation(x, self.quantizer, self.centre)

    def extra_repr(self) -> str:
        return f"centre={self.centre}"


def build_input_quantizer(
    act_bits: int,
    act_binarizer: str,
    act_quantizer: str,
    act_centre: float,
    non_negative: bool,
    outliers: int = 0,
    floor: float = 0.0,
) -> nn.Module:
    """The module a BinaryLinear applies to its input: identity (32 bits), the plain mean-sign or the elastic
    sign (1 bit), or a learned-step uniform quantizer (2 or 4 bits; unsigned for non-negative inputs).
    `outliers`: input channels the learned quantizers keep at full precision; `floor`: where their unsigned
    levels start (`beexformer.quantizers`; the mean-sign has no levels to move and ignores it)."""
    if act_bits == 32:
        return nn.Identity()
    if act_bits == 1:
        if act_binarizer == "mean_sign":
            if outliers:
                raise ValueError("act_outliers needs a learned activation quantizer: act_binarizer='elastic' at 1 bit")
            return MeanSign(act_quantizer, act_centre)
        if act_binarizer == "elastic":
            return ElasticSign(signed=not non_negative, outliers=outliers, floor=floor)
        raise ValueError(f"act_binarizer={act_binarizer!r}: choose one of {', '.join(ACT_BINARIZERS)}")
    return LsqQuantizer(act_bits, signed=not non_negative, outliers=outliers, floor=floor)


class BinaryLinear(nn.Linear):
    """nn.Linear whose weight (weight_bits=1) is binarized and whose input is quantized (act_bits < 32) in
    the forward pass.

    The real-valued latent weight stays float32 for the optimizer; only its sign bits and per-row scale
    matter for inference (see `beexformer.engine.export`). With weight_bits=32 and act_bits=32 the layer
    is exactly nn.Linear.

    Inputs (`beexformer.quantizers` has the exact formulas): act_bits=1 with act_binarizer="mean_sign" is
    x_q = c + beta * sign(x - c), c = `act_centre` (0.5 after a sigmoid, 0 elsewhere); "elastic" is BiT's
    elastic sign with a learned step and threshold; act_bits=2 or 4 is LSQ. `non_negative` marks an input
    that is (nearly) never negative (after a sigmoid or GELU): the learned quantizers then use the unsigned
    set {0, ..., 2^k - 1} * s (the two-set scheme), moved to start at `act_floor` when the input can go below
    0 (GELU's -0.17); the mean-sign keeps its centre.
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
        act_binarizer: str = "mean_sign",
        non_negative: bool = False,
        act_outliers: int = 0,
        act_floor: float = 0.0,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if weight_bits not in (1, 32) or act_bits not in ACT_BITS:
            raise ValueError(f"weight_bits must be 1 or 32, act_bits one of {ACT_BITS}; got {weight_bits}, {act_bits}")
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.weight_scale_mode: ScaleMode = weight_scale
        self.act_centre = act_centre
        self.act_binarizer = act_binarizer
        self.non_negative = non_negative
        self.weight_quantizer = get_quantizer(weight_quantizer)
        self.input_quantizer = build_input_quantizer(
            act_bits, act_binarizer, act_quantizer, act_centre, non_negative, act_outliers, act_floor
        )
        # Below 1 only inside a training step with the binarization ramp (training/ramp.py): a blend of W and
        # alpha * sign(W). A plain attribute, not state: the trainer derives it from the step.
        self.binarization_level = 1.0

    def effective_weight(self) -> Tensor:
        """The weight the forward pass multiplies by: alpha * sign(W) when binarized (blended with W below
        binarization level 1), else W."""
        if self.weight_bits == 1:
            return blend(self.weight, self.twin_weight(), self.binarization_level)
        return self.weight

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.input_quantizer(x), self.effective_weight(), self.bias)

    def twin_weight(self) -> Tensor:
        """The weight of the float twin of this layer (an nn.Linear computing the same product)."""
        if self.weight_bits == 1:
            return binarize_weight(self.weight, self.weight_quantizer, self.weight_scale_mode)
        return self.weight

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


def linear_from_config(config, in_features: int, out_features: int, *, name: str) -> BinaryLinear:
    """A BinaryLinear with the bit widths and quantizers of a `BEExformerConfig`; `name` (s2, lin2, q, ...)
    says how its input is coded (`BEExformerConfig.input_coding`: unsigned levels after a sigmoid or GELU,
    the mean-sign's centre, the levels' floor)."""
    coding = config.input_coding(name)
    return BinaryLinear(
        in_features,
        out_features,
        weight_bits=config.weight_bits,
        act_bits=config.act_bits,
        weight_quantizer=config.weight_quantizer,
        act_quantizer=config.act_quantizer,
        weight_scale=config.weight_scale,
        act_centre=coding.centre,
        act_binarizer=config.act_binarizer,
        non_negative=coding.non_negative,
        act_outliers=config.act_outliers,
        act_floor=coding.floor,
    )
