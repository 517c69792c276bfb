"""Sign and bit-packing of arrays along their last (input, K) axis into uint64 words.

Convention, shared by the exporter, the runtime and the kernels:

- sign(x) = +1 for x >= 0 and -1 for x < 0 (sign(0) = +1, as `beexformer.binarize.hard_sign`);
- bit k % 64 of word k // 64 holds the sign of element k: 1 for +1, 0 for -1 (little-endian bit order);
- the tail bits of the last word (k >= K) are 0 in *every* operand. XOR of two zero bits is zero, so padding
  never adds to popcount(a ^ w); the kernels then use the real K in dot = K - 2 * popcount(a ^ w).

Weights are stored word-major, [ceil(K / 64), N]: the GEMM's inner loop runs over N with unit stride.
"""

from __future__ import annotations

import numpy as np

WORD_BITS = 64


def n_words(k: int) -> int:
    """Number of uint64 words that hold k bits."""
    return (int(k) + WORD_BITS - 1) // WORD_BITS


def sign_pm1(x: np.ndarray) -> np.ndarray:
    """+1 / -1 as int8 with sign(0) = +1 (NaN maps to -1, like `x >= 0` in torch)."""
    return np.where(np.asarray(x) >= 0, np.int8(1), np.int8(-1))


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Pack sign(x) along the last axis: [..., K] -> uint64 [..., ceil(K / 64)], tail bits 0."""
    x = np.asarray(x)
    k = x.shape[-1]
    bits = x >= 0
    pad = n_words(k) * WORD_BITS - k
    if pad:
        bits = np.concatenate([bits, np.zeros((*x.shape[:-1], pad), dtype=bool)], axis=-1)
    packed = np.packbits(bits, axis=-1, bitorder="little")  # [..., KW * 8] bytes, byte j = bits 8j..8j+7
    words = np.ascontiguousarray(packed).view("<u8")
    return words.astype(np.uint64, copy=False)


def unpack_signs(words: np.ndarray, k: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Inverse of `pack_signs`: uint64 [..., KW] -> +1/-1 of `dtype` [..., k]."""
    words = np.ascontiguousarray(np.asarray(words, dtype=np.uint64))
    if words.shape[-1] != n_words(k):
        raise ValueError(f"{words.shape[-1]} words cannot hold exactly {k} bits")
    as_bytes = words.astype("<u8", copy=False).view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=-1, count=k, bitorder="little")
    return (bits.astype(dtype) * 2 - 1).astype(dtype, copy=False)


def pack_weight(weight: np.ndarray) -> np.ndarray:
    """Pack a weight [N, K] (output rows, input columns) as word-major uint64 [ceil(K / 64), N]."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D [N, K], got shape {weight.shape}")
    return np.ascontiguousarray(pack_signs(weight).T)


def unpack_weight(words: np.ndarray, k: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Inverse of `pack_weight`: word-major uint64 [KW, N] -> +1/-1 [N, k]."""
    return unpack_signs(np.asarray(words).T, k, dtype)
