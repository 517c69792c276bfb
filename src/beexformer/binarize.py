"""Binarization-aware training: sign in the forward pass, a surrogate gradient in the backward pass.

Quantizers are small named classes, selectable by name in the config (`QUANTIZERS`):

- ``approx_sign``: forward sign(x) with sign(0) = +1; backward through Bi-Real Net's second-order
  piecewise polynomial g(x), whose derivative is g'(x) = max(0, 2 - 2|x|) (docs/design.md section 4).
- ``ste``: forward sign(x); backward the straight-through estimator clipped to [-1, 1] (ablation).
- ``identity``: no quantization (the float twin).

Weights are binarized magnitude-aware: W_b = alpha * sign(W), alpha = mean|W| per output row (or per tensor).
Activations, when binarized, become x_q = c + beta * sign(x - c), beta = mean|x - c| per token, with
the centre c = 0 except after a sigmoid (c = 0.5), whose outputs are all positive and would
otherwise all map to +1.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

ScaleMode = Literal["row", "tensor"]


def hard_sign(x: Tensor) -> Tensor:
    """sign with sign(0) = +1, so every value is exactly +-1 (torch.sign(0) is 0)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def approx_sign_grad(x: Tensor) -> Tensor:
    """d/dx of the piecewise polynomial: 2 + 2x on [-1, 0), 2 - 2x on [0, 1), 0 outside."""
    return torch.clamp(2.0 - 2.0 * x.abs(), min=0.0)


def ste_grad(x: Tensor) -> Tensor:
    """The straight-through estimator, clipped: 1 where |x| <= 1, else 0."""
    return (x.abs() <= 1.0).to(x.dtype)


class _SignFunction(torch.autograd.Function):
    """sign forward; backward multiplies by the surrogate derivative it was given."""

    @staticmethod
    def forward(ctx, x: Tensor, surrogate) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return hard_sign(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate(x), None


class Quantizer:
    """Maps a real tensor to +-1 (forward) with a chosen surrogate gradient (backward)."""

    name = "base"

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ApproxSign(Quantizer):
    """sign forward, Bi-Real Net ApproxSign backward: g'(x) = max(0, 2 - 2|x|)."""

    name = "approx_sign"

    def __call__(self, x: Tensor) -> Tensor:
        return _SignFunction.apply(x, approx_sign_grad)


class SteSign(Quantizer):
    """sign forward, straight-through gradient clipped to |x| <= 1 backward."""

    name = "ste"

    def __call__(self, x: Tensor) -> Tensor:
        return _SignFunction.apply(x, ste_grad)


class Identity(Quantizer):
    """No quantization: the float twin."""

    name = "identity"

    def __call__(self, x: Tensor) -> Tensor:
        return x


QUANTIZERS: dict[str, type[Quantizer]] = {q.name: q for q in (ApproxSign, SteSign, Identity)}


def get_quantizer(name: str) -> Quantizer:
    """Look up a quantizer by its config name."""
    try:
        return QUANTIZERS[name]()
    except KeyError:
        raise ValueError(f"unknown quantizer {name!r}; choose one of {sorted(QUANTIZERS)}") from None


def weight_scale(weight: Tensor, mode: ScaleMode = "row") -> Tensor:
    """alpha = mean|W| per output row ([out, 1]) or per tensor ([1, 1]); detached from nothing: the
    gradient flows into alpha as in XNOR-Net, which lets the latent magnitudes carry information."""
    if mode == "row":
        return weight.abs().mean(dim=1, keepdim=True)
    if mode == "tensor":
        return weight.abs().mean().reshape(1, 1)
    raise ValueError(f"unknown weight scale mode {mode!r}; choose 'row' or 'tensor'")


def binarize_weight(weight: Tensor, quantizer: Quantizer, mode: ScaleMode = "row") -> Tensor:
    """W_b = alpha * sign(W): every row takes exactly the values +-alpha_row."""
    return weight_scale(weight, mode) * quantizer(weight)


def blend(latent: Tensor, binarized: Tensor, level: float) -> Tensor:
    """latent + level * (binarized - latent): the float weight at level 0, the 1-bit one at level 1 (the
    binarization ramp of `beexformer.training.ramp`); exactly `binarized` at level 1."""
    return binarized if level >= 1.0 else latent + level * (binarized - latent)


def binarize_activation(x: Tensor, quantizer: Quantizer, centre: float = 0.0) -> Tensor:
    """x_q = c + beta * sign(x - c) with beta = mean|x - c| over the feature axis (one scale per token)."""
    shifted = x - centre if centre else x
    beta = shifted.abs().mean(dim=-1, keepdim=True)
    return beta * quantizer(shifted) + centre if centre else beta * quantizer(shifted)
