"""The binarization ramp: 1-bit layers that start from pretrained weights are blended into 1-bit gradually.

Binarizing every linear of a pretrained encoder at once leaves little of its function (docs/training.md:
the hidden states of the last block keep a cosine of 0.31 to the float model's), and labels alone then have to
rebuild the rest. With a ramp the forward pass of training uses W + level * (alpha * sign(W) - W): the float
weight at level 0, the 1-bit weight at level 1, with the level rising linearly over the first `ramp` share of
the steps. Evaluation, checkpoints, export and inference never see a blend: outside a training step every
layer is at level 1, the model that is exported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def ramp_level(step: int, total_steps: int, ramp: float) -> float:
    """The level of optimizer step `step` (0-based) of `total_steps`: step / (ramp * total), at most 1."""
    if ramp <= 0:
        return 1.0
    return min(1.0, step / (ramp * total_steps))


@contextmanager
def binarization_level(model: nn.Module, level: float) -> Iterator[None]:
    """Every 1-bit layer of `model` (those with a `binarization_level`) at `level` inside the block, back at 1
    after it, also when the block raises (Ctrl-C in a training step must not leave a blended model)."""
    if level >= 1.0:  # every layer is at 1 outside such a block: no walk over the modules after the ramp
        yield
        return
    layers = [m for m in model.modules() if hasattr(m, "binarization_level")]
    for layer in layers:
        layer.binarization_level = level
    try:
        yield
    finally:
        for layer in layers:
            layer.binarization_level = 1.0
