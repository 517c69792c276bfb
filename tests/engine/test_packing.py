"""Bit packing: layout, sign(0) = +1, zero tail bits, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from beexformer.engine.packing import n_words, pack_signs, pack_weight, sign_pm1, unpack_signs, unpack_weight


def test_sign_of_zero_is_plus_one():
    assert sign_pm1(np.array([-1.0, -0.0, 0.0, 2.0])).tolist() == [-1, 1, 1, 1]


@pytest.mark.parametrize("k", [1, 63, 64, 65, 127, 128, 200])
def test_round_trip_and_zero_tail(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((3, 5, k)).astype(np.float32)
    words = pack_signs(x)
    assert words.dtype == np.uint64 and words.shape == (3, 5, n_words(k))
    assert np.array_equal(unpack_signs(words, k, np.int8), sign_pm1(x))
    if k % 64:
        assert not np.any(words[..., -1] >> np.uint64(k % 64)), "tail bits must be zero"


def test_little_endian_bit_order():
    x = -np.ones(70, dtype=np.float32)
    x[0] = x[5] = x[64] = 1.0
    words = pack_signs(x)
    assert words.tolist() == [(1 << 0) | (1 << 5), 1]


def test_weight_is_word_major():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((7, 130))
    packed = pack_weight(w)
    assert packed.shape == (3, 7) and packed.flags.c_contiguous
    assert np.array_equal(unpack_weight(packed, 130), sign_pm1(w).astype(np.float32))
