"""The fixed sinusoidal position table (Vaswani et al.), one implementation for both runtimes.

numpy, float32: the PyTorch embedding registers it as a buffer and the packed runtime adds it as it is, so
the two add bit-identical position vectors.
"""

from __future__ import annotations

import math

import numpy as np


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """[length, dim] float32: sin at even columns, cos at odd ones, frequencies 10000^(-2i/dim)."""
    position = np.arange(length, dtype=np.float32)[:, None]
    freq = np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / dim))
    table = np.zeros((length, dim), dtype=np.float32)
    table[:, 0::2] = np.sin(position * freq)
    table[:, 1::2] = np.cos(position * freq[: dim // 2])
    return table
