"""The kernels against plain numpy references: the binary GEMM exactly, the epilogues to float rounding."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from beexformer.engine import kernels as K
from beexformer.engine.packing import pack_signs, pack_weight, sign_pm1

FLAVOURS = [K.SERIAL, K.PARALLEL]
SHAPES = [
    (1, 1, 1),
    (1, 64, 64),
    (1, 65, 7),
    (3, 63, 5),
    (5, 200, 33),
    (17, 127, 129),
    (40, 256, 300),
    (33, 513, 3),
]


def _int_product(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    return sign_pm1(a).astype(np.int64) @ sign_pm1(w).astype(np.int64).T


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_binary_gemm_is_exact(ks, shape):
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    a[0, 0] = 0.0  # sign(0) = +1 on both sides
    w[-1, -1] = 0.0
    out = ks.bgemm_int(pack_signs(a), pack_weight(w), k)
    assert out.dtype == np.int32
    assert np.array_equal(out, _int_product(a, w))


def test_binary_gemm_random_shapes():
    rng = np.random.default_rng(7)
    for _ in range(25):
        m, k, n = int(rng.integers(1, 70)), int(rng.integers(1, 600)), int(rng.integers(1, 300))
        a = rng.standard_normal((m, k))
        w = rng.standard_normal((n, k))
        assert np.array_equal(K.SERIAL.bgemm_int(pack_signs(a), pack_weight(w), k), _int_product(a, w))


@pytest.mark.parametrize("centre", [0.0, 0.5])
def test_pack_rows_matches_numpy(centre):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 100)).astype(np.float32)
    words, beta = K.SERIAL.pack_rows(x, np.float32(centre))
    assert np.array_equal(words, pack_signs(x - np.float32(centre)))
    np.testing.assert_allclose(beta, np.abs(x - np.float32(centre)).mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("centre", [0.0, 0.5])
def test_affine_epilogue(ks, centre):
    """y = F.linear(c + beta * sign(x - c), alpha * sign(W), b), computed through the packed kernel."""
    rng = np.random.default_rng(2)
    m, k, n = 37, 150, 70
    x = rng.standard_normal((m, k)).astype(np.float32) + centre
    w = rng.standard_normal((n, k)).astype(np.float32)
    alpha = np.abs(w).mean(axis=1).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    words, beta = ks.pack_rows(x, np.float32(centre))
    rowsum = sign_pm1(w).sum(axis=1).astype(np.float32)
    y = ks.bgemm_affine(words, beta, pack_weight(w), alpha, np.float32(centre) * rowsum, bias, k)
    xq = centre + beta[:, None].astype(np.float64) * sign_pm1(x - np.float32(centre))
    ref = xq @ (alpha[:, None] * sign_pm1(w)).T.astype(np.float64) + bias
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def _reference_act(y: np.ndarray, code: int) -> np.ndarray:
    y64 = y.astype(np.float64)
    if code == K.ACT_SIGMOID:
        return 1 / (1 + np.exp(-y64))
    if code == K.ACT_TANH:
        return np.tanh(y64)
    if code == K.ACT_GELU:
        return 0.5 * y64 * (1 + np.vectorize(math.erf)(y64 / math.sqrt(2)))
    if code == K.ACT_RELU:
        return np.maximum(y64, 0.0)
    return y64


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize(
    "acts,centres",
    [
        ([K.ACT_SIGMOID, K.ACT_TANH], [0.5, 0.0]),
        ([K.ACT_GELU], [0.0]),
        ([K.ACT_RELU, K.ACT_IDENTITY], [0.0, 0.0]),
    ],
)
def test_act_pack_epilogue(ks, acts, centres):
    rng = np.random.default_rng(3)
    m, k, n_seg = 45, 96, 100  # segment width not a multiple of 64
    n = n_seg * len(acts)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    alpha = np.abs(w).mean(axis=1).astype(np.float32)
    bias = (0.3 * rng.standard_normal(n)).astype(np.float32)
    zeros = np.zeros(n, dtype=np.float32)
    xw, xb = ks.pack_rows(x, np.float32(0.0))
    y = ks.bgemm_affine(xw, xb, pack_weight(w), alpha, zeros, bias, k)
    words, betas = ks.bgemm_act_pack(
        xw, xb, pack_weight(w), alpha, zeros, bias, k, np.array(acts), np.array(centres, dtype=np.float32)
    )
    assert words.shape == (len(acts), m, 2) and betas.shape == (len(acts), m)
    for s, (code, c) in enumerate(zip(acts, centres, strict=True)):
        seg = y[:, s * n_seg : (s + 1) * n_seg]
        z = _reference_act(seg, code) - c
        # Signs are compared where z is clearly non-zero (at exact zero, float32 rounding decides).
        clear = np.abs(z) > 1e-6
        got = np.unpackbits(words[s].view(np.uint8), axis=1, count=n_seg, bitorder="little").astype(bool)
        assert np.array_equal(got[clear], (z >= 0)[clear])
        np.testing.assert_allclose(betas[s], np.abs(z).mean(axis=1), rtol=1e-6, atol=1e-7)


def test_sigmoid_sign_of_tiny_negative_matches_float32():
    """sigmoid(y) - 0.5 in float32 is exactly 0 (sign +1) for tiny negative y; the kernel must agree."""
    k = 64
    x = np.ones((1, k), dtype=np.float32)
    w = np.ones((2, k), dtype=np.float32)
    words, beta = K.SERIAL.pack_rows(x, np.float32(0.0))
    alpha = np.ones(2, dtype=np.float32)
    bias = np.array([-64.0 - 1e-9, -64.0 - 1e-3], dtype=np.float32)  # y = 64 + bias
    out, _ = K.SERIAL.bgemm_act_pack(
        words, beta, pack_weight(w), alpha, np.zeros(2, np.float32), bias, k,
        np.array([K.ACT_SIGMOID, K.ACT_SIGMOID]), np.array([0.5, 0.5], dtype=np.float32),
    )  # fmt: skip
    y = np.float32(64.0) + bias
    expected = (np.float32(1.0) / (np.float32(1.0) + np.exp(-y)) - np.float32(0.5)) >= 0
    assert [bool(out[0, 0, 0] & 1), bool(out[1, 0, 0] & 1)] == expected.tolist()


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
def test_attention_matches_numpy(ks):
    rng = np.random.default_rng(4)
    lengths = [1, 5, 17]
    d, heads = 32, 4
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    qkv = rng.standard_normal((offsets[-1], 3 * d)).astype(np.float32)
    ctx = ks.attention(qkv, offsets, heads)
    dh = d // heads
    for b in range(len(lengths)):
        rows = qkv[offsets[b] : offsets[b + 1]].astype(np.float64)
        for h in range(heads):
            q, k_, v = (rows[:, p * d + h * dh : p * d + (h + 1) * dh] for p in range(3))
            s = q @ k_.T / math.sqrt(dh)
            p = np.exp(s - s.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            ref = p @ v
            np.testing.assert_allclose(ctx[offsets[b] : offsets[b + 1], h * dh : (h + 1) * dh], ref, atol=2e-6)


def test_gelu_is_the_exact_erf_form():
    """The vectorizable GELU against 0.5 x (1 + erf(x / sqrt 2)) in float64: a few float32 ulps."""
    x = np.concatenate([np.linspace(-12, 12, 48001), np.random.default_rng(6).standard_normal(4000) * 3])
    x = x.astype(np.float32)[None, :]
    ref = _reference_act(x, K.ACT_GELU)
    got = K.SERIAL.gelu_rows(x)
    assert np.all(np.abs(got - ref) <= 4e-7 * np.maximum(np.abs(ref), 1.0))
    assert np.all(got[x >= 9] == x[x >= 9])  # erfc(9 / sqrt 2) is below half an ulp of 1


def test_layernorm_and_pool():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10, 48)).astype(np.float32) * 3 + 1
    g, b = rng.standard_normal(48).astype(np.float32), rng.standard_normal(48).astype(np.float32)
    out = K.SERIAL.layernorm(x, g, b, np.float32(1e-5))
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(out, ref, atol=1e-5)
    offsets = np.array([0, 3, 10], dtype=np.int64)
    pooled = K.SERIAL.mean_pool(x, offsets)
    np.testing.assert_allclose(pooled, np.stack([x[:3].mean(0), x[3:].mean(0)]), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# 1-bit weights x 1-, 2- and 4-bit quantized activations (bit-serial); the reference is the quantizer itself

CODES = [(2, True), (2, False), (4, True), (4, False), (1, True), (1, False), (3, True)]  # (bits, signed)


def _offset(bits: int, signed: bool) -> np.float32:
    """z + 1/2 of `quantizers.quantize_codes`."""
    return np.float32((2**bits - 1) / 2 + 0.5 if signed else 0.5)


def _z2(bits: int, signed: bool) -> int:
    return 2**bits - 1 if signed else 0


def _torch_codes(x: np.ndarray, step: float, bits: int, signed: bool, threshold: float | None = None) -> np.ndarray:
    """The codes PyTorch's quantizer computes (beexformer.quantizers.quantize_codes), as int64."""
    import torch

    from beexformer.quantizers import quantize_codes

    thr = None if threshold is None else torch.tensor(np.float32(threshold))
    codes = quantize_codes(torch.from_numpy(x.astype(np.float32)), torch.tensor(np.float32(step)), bits, signed, thr)
    return codes.numpy().astype(np.int64)


def _random_codes(rng, m: int, k: int, bits: int) -> np.ndarray:
    return rng.integers(0, 2**bits, (m, k)).astype(np.float32)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("code", CODES, ids=str)
@pytest.mark.parametrize("threshold", [None, 0.13])
def test_quantize_rows_equals_torch_quantizer(ks, code, threshold):
    bits, signed = code
    rng = np.random.default_rng(bits * 10 + signed)
    step = np.float32(0.37)
    x = (rng.standard_normal((7, 130)) * 2).astype(np.float32)
    # exact level boundaries (ties go up, as floor(u + 1/2)) and values a rounding error either side of them
    x[0, :6] = np.array([0.5, 1.5, -0.5, -1.5, 0.0, 1.0], np.float32) * step
    x[1, :4] = np.nextafter(x[0, :4], np.float32(np.inf))
    x[2, :4] = np.nextafter(x[0, :4], np.float32(-np.inf))
    planes, usum = ks.quantize_rows(x, step, np.float32(threshold or 0.0), _offset(bits, signed), bits)
    assert planes.shape == (7, bits, 3) and planes.dtype == np.uint64
    ref = _torch_codes(x, step, bits, signed, threshold)
    assert np.array_equal(usum, ref.sum(axis=1))
    for j in range(bits):
        unpacked = np.unpackbits(planes[:, j].view(np.uint8), axis=1, count=130, bitorder="little")
        assert np.array_equal(unpacked, (ref >> j) & 1)
    assert not (planes[:, :, -1] >> np.uint64(130 % 64)).any()  # bits past K stay 0


def _planes_of_codes(ks, n: np.ndarray, bits: int):
    """Planes and sums of given integer codes n (quantizing n itself with step 1, no offset shift)."""
    return ks.quantize_rows(n, np.float32(1.0), np.float32(0.0), np.float32(0.5), bits)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("code", CODES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bitserial_gemm_is_exact(ks, code, shape):
    bits, signed = code
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k + n + bits)
    codes = _random_codes(rng, m, k, bits)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[-1, -1] = 0.0
    planes, usum = _planes_of_codes(ks, codes, bits)
    assert np.array_equal(usum, codes.sum(axis=1).astype(np.int64))
    corr = _z2(bits, signed) * sign_pm1(w).astype(np.int64).sum(axis=1)
    out = ks.bgemm_planes_int(planes, usum, pack_weight(w), corr)
    ref = (2 * codes.astype(np.int64) - _z2(bits, signed)) @ sign_pm1(w).astype(np.int64).T  # 2 (n - z) . w
    assert np.array_equal(out, ref)


def test_bitserial_gemm_random_shapes():
    rng = np.random.default_rng(11)
    for _ in range(25):
        m, k, n = int(rng.integers(1, 70)), int(rng.integers(1, 600)), int(rng.integers(1, 300))
        bits, signed = CODES[int(rng.integers(len(CODES)))]
        codes = _random_codes(rng, m, k, bits)
        w = rng.standard_normal((n, k))
        planes, usum = _planes_of_codes(K.SERIAL, codes, bits)
        corr = _z2(bits, signed) * sign_pm1(w).astype(np.int64).sum(axis=1)
        ref = (2 * codes.astype(np.int64) - _z2(bits, signed)) @ sign_pm1(w).astype(np.int64).T
        assert np.array_equal(K.SERIAL.bgemm_planes_int(planes, usum, pack_weight(w), corr), ref)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("code", CODES[:6], ids=str)
def test_bitserial_affine_epilogue(ks, code):
    """y = F.linear(s * (n - z), alpha * sign(W), b) through the packed bit planes."""
    bits, signed = code
    rng = np.random.default_rng(12)
    m, k, n = 37, 150, 70
    step = np.float32(0.21)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    alpha = np.abs(w).mean(axis=1).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    planes, usum = ks.quantize_rows(x, step, np.float32(0.0), _offset(bits, signed), bits)
    corr = _z2(bits, signed) * sign_pm1(w).astype(np.int64).sum(axis=1)
    y = ks.bgemm_planes_affine(planes, usum, step / 2, pack_weight(w), alpha, corr, bias)
    xq = np.float64(step) * (_torch_codes(x, step, bits, signed) - _z2(bits, signed) / 2)
    ref = xq @ (alpha[:, None] * sign_pm1(w)).T.astype(np.float64) + bias
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("act", [K.ACT_GELU, K.ACT_SIGMOID, K.ACT_TANH], ids=["gelu", "sigmoid", "tanh"])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_bitserial_requantize_epilogue(ks, act, bits):
    """The fused epilogue (scale, bias, activation, requantize, pack) equals quantizing the float output."""
    rng = np.random.default_rng(13)
    m, k, n = 45, 96, 100  # output width not a multiple of 64
    step, signed_out = np.float32(0.3), act == K.ACT_TANH
    out_step, out_thr = np.float32(0.11), np.float32(0.02)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    alpha = np.abs(w).mean(axis=1).astype(np.float32)
    bias = (0.3 * rng.standard_normal(n)).astype(np.float32)
    planes, usum = ks.quantize_rows(x, step, np.float32(0.0), _offset(bits, True), bits)
    corr = _z2(bits, True) * sign_pm1(w).astype(np.int64).sum(axis=1)
    wp = pack_weight(w)
    y = ks.bgemm_planes_affine(planes, usum, step / 2, wp, alpha, corr, bias)
    out, sums = ks.bgemm_planes_act_quant(
        planes, usum, step / 2, wp, alpha, corr, bias, act, out_step, out_thr, _offset(bits, signed_out), bits
    )
    assert out.shape == (m, bits, 2) and sums.shape == (m,)
    z = _reference_act(y, act).astype(np.float32)
    ref = _torch_codes(z, out_step, bits, signed_out, out_thr)
    # Exact wherever the level coordinate is not within float rounding of a level boundary.
    u = (z - out_thr) / out_step + _offset(bits, signed_out)
    clear = (np.abs(u - np.round(u)) < 0.5 - 1e-4).all(axis=1)
    assert clear.mean() > 0.9
    assert np.array_equal(sums[clear], ref[clear].sum(axis=1))
    for j in range(bits):
        unpacked = np.unpackbits(out[:, j].view(np.uint8), axis=1, count=n, bitorder="little")
        assert np.array_equal(unpacked[clear], ((ref >> j) & 1)[clear])


# ---------------------------------------------------------------------------------------------------------
# the register tiles of `simd` (TILE columns per call; the last N % TILE columns take the scalar tile)

TILE_SHAPES = [(3, 1, 32), (2, 63, 33), (5, 65, 64), (4, 130, 95), (3, 384, 96), (2, 1541, 131)]


@pytest.mark.parametrize("shape", TILE_SHAPES, ids=str)
def test_register_tiles_equal_the_integer_product_and_the_float32_epilogue(shape):
    """Both sides of every tile boundary, K not a multiple of 64 included: the integer product exactly, and the
    affine epilogue bit for bit equal to its float32 formula evaluated one rounding at a time (numpy float32,
    no fused multiply-add), so register tiles and scalar columns compute the same function."""
    from beexformer.engine import simd

    m, k, n = shape
    assert simd.TILE == 32
    rng = np.random.default_rng(k + n)
    a, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    ap, wp = pack_signs(a), pack_weight(w)
    dot = _int_product(a, w)
    assert np.array_equal(K.SERIAL.bgemm_int(ap, wp, k), dot)
    beta = rng.random(m).astype(np.float32)
    alpha, crs, bias = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    ref = alpha * (beta[:, None] * dot.astype(np.float32) + crs) + bias
    assert np.array_equal(K.SERIAL.bgemm_affine(ap, beta, wp, alpha, crs, bias, k), ref)
    for bits in (1, 2, 3, 4):
        codes = _random_codes(rng, m, k, bits)
        planes, usum = _planes_of_codes(K.SERIAL, codes, bits)
        corr = (2**bits - 1) * sign_pm1(w).astype(np.int64).sum(axis=1)
        dot2 = (2 * codes.astype(np.int64) - (2**bits - 1)) @ sign_pm1(w).astype(np.int64).T
        assert np.array_equal(K.SERIAL.bgemm_planes_int(planes, usum, wp, corr), dot2)
        hs = np.float32(0.13)
        ref = alpha * (hs * dot2.astype(np.float32)) + bias
        assert np.array_equal(K.SERIAL.bgemm_planes_affine(planes, usum, hs, wp, alpha, corr, bias), ref)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("d", [1, 64, 100, 384])
def test_embed_binary_rows(ks, d):
    """Rows of the 1-bit token table: scale * sign, exactly, whole words and the partial last word."""
    rng = np.random.default_rng(d)
    table = rng.standard_normal((50, d)).astype(np.float32)
    table[3, 0] = 0.0  # sign(0) = +1
    scale = rng.random(50).astype(np.float32)
    ids = rng.integers(0, 50, 30)
    ids[0] = 3
    ref = (np.where(table[ids] >= 0, 1, -1) * scale[ids][:, None]).astype(np.float32)
    assert np.array_equal(ks.embed_binary(pack_signs(table), scale, ids, d), ref)


SIGN_SHAPES = [(1, 1, 1), (1, 3, 64), (3, 100, 70), (4, 384, 128), (5, 65, 200), (9, 1536, 384), (25, 384, 1152)]


@pytest.mark.parametrize("shape", SIGN_SHAPES, ids=str)
def test_sign_gemm_is_the_w1a32_linear(shape):
    """W1A32 from the bits: x @ (alpha * sign W)^T + bias against float64, rows past a 4-row tile and columns
    past a 64-column word included; sign(0) = +1; the parallel flavour gives the same bits as the serial."""
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[0, 0] = 0.0
    alpha = rng.random(n).astype(np.float32) + np.float32(0.1)
    bias = rng.standard_normal(n).astype(np.float32)
    signs = pack_signs(np.ascontiguousarray(w.T))
    y = K.SERIAL.sign_gemm(x, signs, alpha, bias)
    ref = x.astype(np.float64) @ (alpha[:, None] * sign_pm1(w)).T.astype(np.float64) + bias
    # float32 sums of k terms: error bounded by k ulps of sum |x| * alpha
    bound = 2 * k * np.finfo(np.float32).eps * (np.abs(x).sum(axis=1)[:, None] * alpha + np.abs(bias)) + 1e-7
    assert np.all(np.abs(y - ref) <= bound)
    assert np.array_equal(K.PARALLEL.sign_gemm(x, signs, alpha, bias), y)


_PORTABILITY_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from beexformer.engine import kernels as K
    from beexformer.engine.packing import pack_signs, pack_weight, sign_pm1
    rng = np.random.default_rng(0)
    for m, k, n in [(1, 65, 7), (9, 300, 129), (40, 256, 64)]:  # scalar columns, register tiles, both
        a, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
        ref = sign_pm1(a).astype(np.int64) @ sign_pm1(w).astype(np.int64).T
        assert np.array_equal(K.SERIAL.bgemm_int(pack_signs(a), pack_weight(w), k), ref)
        for bits in (1, 2, 3, 4):
            n = rng.integers(0, 2**bits, (m, k)).astype(np.float32)
            planes, usum = K.SERIAL.quantize_rows(n, np.float32(1.0), np.float32(0.0), np.float32(0.5), bits)
            corr = (2**bits - 1) * sign_pm1(w).astype(np.int64).sum(axis=1)
            ref = (2 * n.astype(np.int64) - (2**bits - 1)) @ sign_pm1(w).astype(np.int64).T
            assert np.array_equal(K.SERIAL.bgemm_planes_int(planes, usum, pack_weight(w), corr), ref)
        x = a.astype(np.float32)  # W1A32 from the bits (float sums: close, not bit-exact)
        alpha, bias = np.ones(len(w), np.float32), np.zeros(len(w), np.float32)
        y = K.SERIAL.sign_gemm(x, pack_signs(np.ascontiguousarray(w.T)), alpha, bias)
        assert np.allclose(y, x.astype(np.float64) @ sign_pm1(w).T, rtol=1e-5, atol=1e-4)
    print("exact")
    """
)


@pytest.mark.parametrize("cpu", ["haswell", "x86-64"], ids=["avx2-only", "baseline-x86-64"])
def test_exact_on_other_cpus(cpu, tmp_path):
    """The same source compiled for an AVX2-only CPU (no AVX-512, no VPOPCNTQ) and for baseline x86-64 (no
    POPCNT instruction at all) still gives the exact product, 1-bit and bit-serial 1-/2-/4-bit."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 CPU names")
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES="", NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", _PORTABILITY_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exact" in result.stdout
