"""Activation quantizers with learned parameters: k-bit uniform (LSQ) and BiT's elastic sign.

Each is a small ``nn.Module`` (larq style: one named class per quantizer) that a `BinaryLinear` applies to its
input. One forward formula covers all of them, so that the packed engine can reproduce it bit for bit:

    L  = 2^k                                   # number of levels
    z  = (L - 1) / 2   for a signed input      # fixed zero point: the levels are symmetric half-integers
    z  = 0             for a non-negative input (after a sigmoid or GELU: the "two-set" scheme)
    n  = clamp(floor((x - b) / s + (z + 1/2)), 0, L - 1)   # integer code in {0, ..., L - 1}
    x_q = s * (n - z)

computed in float32 in exactly this order: subtract b (only when there is a threshold), divide by s (a
division, not a multiplication by 1/s), add the constant z + 1/2 (an exact number: 2^(k-1) when signed, 1/2
when unsigned), floor, clamp, then ``s * (n - z)``. ``floor(u + 1/2)`` is rounding to the nearest level with
ties going up, which is also what makes ``x = b`` map to the positive level at one bit (sign(0) = +1).
``s > 0`` is the step between adjacent levels, one learned scalar per layer input. The levels are

- signed:   s * {-(L-1)/2, ..., -1/2, 1/2, ..., (L-1)/2}, e.g. 2 bits: s * {-1.5, -0.5, 0.5, 1.5}; at one bit
            s * {-1/2, +1/2} = (s/2) * sign(x - b). Every level is a sum of signed bit-planes,
            x_q = s * sum_j 2^(j-1) * (2 * bit_j(n) - 1), so each plane is a +-1 vector for XNOR-popcount.
- unsigned: s * {0, 1, ..., L - 1}; at one bit {0, s}, i.e. s * [x - b >= s/2].

A floor m (`floor`, unsigned inputs only) moves the unsigned levels to m + s * {0, ..., L - 1}: the code is
that of x - m, computed as x - (b + m) (one subtraction, as the packed engine does with b + m as its
threshold), and x_q = s * (n - z) + m. GELU's outputs reach down to GELU_MIN = -0.17; levels from 0 clip all
of those to 0, and most of a pretrained FFN's hidden units sit there: the clipped values shift every output
of the down-projection (docs/training.md, "Where 4-bit activations lose it"). The engine multiplies the
codes as before and adds alpha * m * sum(sign(W)) per output row to the bias.

Quantizers:

- `LsqQuantizer(bits, signed)`: k = 2 or 4, learned step s, no threshold (b = 0).
- `ElasticSign(signed)`: k = 1 with a learned step s and a learned threshold b (BiT's elastic binarization,
  written with s = 2 * alpha for the signed set so that one formula serves both widths).

Backward (LSQ, Esser et al. 2020; for the elastic sign the same as BiT's derivation), with the continuous
level coordinate u = (x - b) / s + z and "inside" meaning 0 < u < L - 1:

    dx_q/dx = 1 inside, 0 outside                 (straight-through round, clipped)
    dx_q/ds = (n - z) - (x - b) / s inside,  (n - z) outside   (i.e. -z below, L - 1 - z above)
    dx_q/db = -1 inside, 0 outside

LSQ also multiplies the step's gradient by g = 1 / sqrt(N * Q_P). We leave it out: the trainer uses Adam,
which divides each parameter's gradient by its running RMS, so a constant factor on one scalar's gradient has
no effect (up to Adam's epsilon).

Outlier channels (`outliers=K > 0`): the K input channels with the largest |x| on the first batch are kept
at full precision, as LLM.int8() keeps its outlier features. A few channels of a pretrained BERT's residual
stream are an order of magnitude larger than the rest; one per-tensor step must either clip them or spend its
levels on them (docs/training.md, "Where 4-bit activations lose it", measures both this and the remedy). The
quantizer sees x with those channels set to 0 and its output takes x back there:
x_q = q(x * (1 - m)) * (1 - m) + x * m, m the channels' mask. The packed engine computes the same sum as the
integer product of the codes plus a small float correction over the K channels (docs/engine.md).

Initialisation: s and b are set from the first batch the quantizer sees (then a buffer records it, and it is
saved with the weights): b = 0 and s = 2 * mean|x| / sqrt(Q_P), LSQ's rule with Q_P the number of positive
levels (2^(k-1) signed, 2^k - 1 unsigned); with several processes, the mean of their values. At one bit
signed this gives levels +-mean|x|, the scale of the plain mean-sign; unsigned, the threshold s/2 = mean(x).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def zero_point(bits: int, signed: bool) -> float:
    """z of the formula: (2^k - 1) / 2 for a signed input, 0 for a non-negative one."""
    return (2**bits - 1) / 2 if signed else 0.0


def quantize_codes(
    x: Tensor, step: Tensor, bits: int, signed: bool, threshold: Tensor | None = None, floor: float = 0.0
) -> Tensor:
    """The integer codes n in {0, ..., 2^k - 1} (as floats) of the module docstring's formula."""
    # one subtraction of b + m (adding 0.0 to b changes nothing), as the packed engine computes it
    below = threshold + floor if threshold is not None else floor
    shifted = x - below if threshold is not None or floor else x
    return torch.clamp(torch.floor(shifted / step + (zero_point(bits, signed) + 0.5)), 0, 2**bits - 1)


def dequantize(codes: Tensor, step: Tensor, bits: int, signed: bool, floor: float = 0.0) -> Tensor:
    """x_q = s * (n - z) + m."""
    levels = step * (codes - zero_point(bits, signed))
    return levels + floor if floor else levels


class _UniformQuantize(torch.autograd.Function):
    """Forward: the module docstring's formula. Backward: its LSQ gradients for x, s and b."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, step: Tensor, threshold: Tensor | None, bits: int, signed: bool, floor: float
    ) -> Tensor:
        codes = quantize_codes(x, step, bits, signed, threshold, floor)
        ctx.save_for_backward(x, step, codes, threshold)
        ctx.bits, ctx.signed, ctx.floor = bits, signed, floor
        return dequantize(codes, step, bits, signed, floor)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        x, step, codes, threshold = ctx.saved_tensors
        z = zero_point(ctx.bits, ctx.signed)
        ratio = (x - (threshold if threshold is not None else 0.0) - ctx.floor) / step
        u = ratio + z
        inside = (u > 0) & (u < 2**ctx.bits - 1)
        grad_x = grad_out * inside
        d_step = torch.where(inside, codes - z - ratio, codes - z)
        grad_step = (grad_out * d_step).sum().reshape(step.shape)
        grad_threshold = None
        if threshold is not None and ctx.needs_input_grad[2]:
            grad_threshold = (-grad_x).sum().reshape(threshold.shape)
        return grad_x, grad_step, grad_threshold, None, None, None


class ActivationQuantizer(nn.Module):
    """A learned-step uniform quantizer of `bits` bits (see the module docstring); `threshold=True` adds the
    learned threshold b. `signed=False` is the non-negative set {0, ..., 2^k - 1} * s, moved to start at `floor`
    (an input bounded below by a negative number, GELU's)."""

    name = "uniform"

    def __init__(
        self, bits: int, signed: bool = True, threshold: bool = False, outliers: int = 0, floor: float = 0.0
    ) -> None:
        super().__init__()
        if floor and signed:
            raise ValueError("a floor moves the unsigned levels: signed=False")
        self.bits, self.signed, self.floor = bits, signed, floor
        self.step = nn.Parameter(torch.ones(()))
        self.threshold = nn.Parameter(torch.zeros(())) if threshold else None
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # the input channels kept at full precision (module docstring), chosen with the step
        self.outlier_channels: Tensor | None
        if outliers > 0:
            self.register_buffer("outlier_channels", torch.zeros(outliers, dtype=torch.long))
        else:
            self.outlier_channels = None

    @property
    def levels(self) -> int:
        return 2**self.bits

    @property
    def positive_levels(self) -> int:
        """Q_P of LSQ's initialisation: how many levels are > 0."""
        return 2 ** (self.bits - 1) if self.signed else 2**self.bits - 1

    @torch.no_grad()
    def initialize_from(self, x: Tensor) -> None:
        """s = 2 * mean|x - m| / sqrt(Q_P), b = 0 (LSQ's rule, from the floor); once, from the first batch."""
        step = (2 * (x.detach() - self.floor).abs().mean().clamp_min(1e-8) / math.sqrt(self.positive_levels)).float()
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            # Every process sees its own first batch; the replicas must start from one step, so average them
            # (all processes run this in the same first forward pass, so the collectives line up).
            dist.all_reduce(step, op=dist.ReduceOp.SUM)
            step /= dist.get_world_size()
        self.step.fill_(float(step))
        if self.threshold is not None:
            self.threshold.zero_()
        self.initialized.fill_(True)

    @torch.no_grad()
    def choose_outliers(self, x: Tensor) -> None:
        """The K channels with the largest |x| over the batch, in ascending order."""
        assert self.outlier_channels is not None
        if self.outlier_channels.numel() > x.shape[-1]:
            raise ValueError(f"{self.outlier_channels.numel()} outlier channels of an input of {x.shape[-1]}")
        peaks = x.detach().abs().reshape(-1, x.shape[-1]).amax(dim=0)
        self.outlier_channels.copy_(peaks.topk(self.outlier_channels.numel()).indices.sort().values)

    def forward(self, x: Tensor) -> Tensor:
        channels = self.outlier_channels
        if channels is not None:
            if not bool(self.initialized):
                self.choose_outliers(x)
            kept = x.index_select(-1, channels)
            x = x.index_fill(-1, channels, 0.0)
        if not bool(self.initialized):
            self.initialize_from(x)
        # The step must stay positive: a step pushed through 0 by a large update would flip every level.
        step = self.step.clamp_min(1e-8)
        out = _UniformQuantize.apply(x, step, self.threshold, self.bits, self.signed, self.floor)
        return out if channels is None else out.index_copy(-1, channels, kept)

    def extra_repr(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        outliers = 0 if self.outlier_channels is None else self.outlier_channels.numel()
        floor = f", floor={self.floor}" if self.floor else ""
        return f"bits={self.bits}, {kind}{floor}, threshold={self.threshold is not None}, outliers={outliers}"


class LsqQuantizer(ActivationQuantizer):
    """k-bit uniform quantizer (k = 2 or 4) with a learned step and LSQ's gradient; no threshold."""

    name = "lsq"

    def __init__(self, bits: int, signed: bool = True, outliers: int = 0, floor: float = 0.0) -> None:
        if bits not in (2, 4):
            raise ValueError(f"LsqQuantizer: bits={bits}, must be 2 or 4")
        super().__init__(bits, signed, threshold=False, outliers=outliers, floor=floor)


class ElasticSign(ActivationQuantizer):
    """BiT's elastic binarization: (s/2) * sign(x - b) for signed inputs, s * [x - b >= s/2] for non-negative
    ones; the step s and the threshold b are learned."""

    name = "elastic"

    def __init__(self, signed: bool = True, outliers: int = 0, floor: float = 0.0) -> None:
        super().__init__(1, signed, threshold=True, outliers=outliers, floor=floor)


def reset_activation_quantizers(model: nn.Module) -> int:
    """Mark every learned activation quantizer as uninitialised, so that the next batch sets its step and
    threshold again (a new stage of a staged schedule at another width). Returns how many there are."""
    count = 0
    for module in model.modules():
        if isinstance(module, ActivationQuantizer):
            module.initialized.fill_(False)
            count += 1
    return count
