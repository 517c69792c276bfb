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
# 1-bit weights x 2- and 4-bit activations (bit-serial)

# (bits, zero): signed codes [-2^(b-1), 2^(b-1)) and unsigned codes [0, 2^b)
CODES = [(2, -2), (2, 0), (4, -8), (4, 0), (3, -4)]


def _reference_codes(x: np.ndarray, step: float, zero: int, bits: int) -> np.ndarray:
    """clamp(round(x / step)) in float32 with round-half-to-even (torch.round), as int64."""
    q = np.rint(x.astype(np.float32) / np.float32(step))
    return np.clip(q, zero, zero + 2**bits - 1).astype(np.int64)


def _random_codes(rng, m: int, k: int, zero: int, bits: int) -> np.ndarray:
    return rng.integers(zero, zero + 2**bits, (m, k)).astype(np.float32)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("code", CODES, ids=str)
def test_quantize_rows_planes(ks, code):
    bits, zero = code
    rng = np.random.default_rng(bits * 10 - zero)
    step = np.float32(0.37)
    x = (rng.standard_normal((7, 130)) * 2).astype(np.float32)
    x[0, :8] = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 0.0], np.float32) * step  # ties: half to even
    planes, usum = ks.quantize_rows(x, step, zero, bits)
    assert planes.shape == (7, bits, 3) and planes.dtype == np.uint64
    ref = _reference_codes(x, step, zero, bits)
    u = ref - zero
    assert np.array_equal(usum, u.sum(axis=1))
    for j in range(bits):
        unpacked = np.unpackbits(planes[:, j].view(np.uint8), axis=1, count=130, bitorder="little")
        assert np.array_equal(unpacked, (u >> j) & 1)
    tail = planes[:, :, -1] >> np.uint64(130 % 64)
    assert not tail.any()  # bits past K stay 0


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("code", CODES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bitserial_gemm_is_exact(ks, code, shape):
    bits, zero = code
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k + n + bits)
    q = _random_codes(rng, m, k, zero, bits)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[-1, -1] = 0.0
    planes, usum = ks.quantize_rows(q, np.float32(1.0), zero, bits)
    zrs = zero * sign_pm1(w).astype(np.int64).sum(axis=1)
    out = ks.bgemm_planes_int(planes, usum, pack_weight(w), zrs)
    assert np.array_equal(out, q.astype(np.int64) @ sign_pm1(w).astype(np.int64).T)


def test_bitserial_gemm_random_shapes():
    rng = np.random.default_rng(11)
    for _ in range(25):
        m, k, n = int(rng.integers(1, 70)), int(rng.integers(1, 600)), int(rng.integers(1, 300))
        bits, zero = CODES[int(rng.integers(len(CODES)))]
        q = _random_codes(rng, m, k, zero, bits)
        w = rng.standard_normal((n, k))
        planes, usum = K.SERIAL.quantize_rows(q, np.float32(1.0), zero, bits)
        zrs = zero * sign_pm1(w).astype(np.int64).sum(axis=1)
        ref = q.astype(np.int64) @ sign_pm1(w).astype(np.int64).T
        assert np.array_equal(K.SERIAL.bgemm_planes_int(planes, usum, pack_weight(w), zrs), ref)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("code", CODES[:4], ids=str)
def test_bitserial_affine_epilogue(ks, code):
    """y = F.linear(step * q, alpha * sign(W), b) through the packed bit planes."""
    bits, zero = code
    rng = np.random.default_rng(12)
    m, k, n = 37, 150, 70
    step = np.float32(0.21)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    alpha = np.abs(w).mean(axis=1).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    planes, usum = ks.quantize_rows(x, step, zero, bits)
    zrs = zero * sign_pm1(w).astype(np.int64).sum(axis=1)
    y = ks.bgemm_planes_affine(planes, usum, step, pack_weight(w), alpha, zrs, bias)
    xq = np.float64(step) * _reference_codes(x, step, zero, bits)
    ref = xq @ (alpha[:, None] * sign_pm1(w)).T.astype(np.float64) + bias
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("acts", [[K.ACT_GELU], [K.ACT_RELU, K.ACT_IDENTITY]], ids=["gelu", "relu|identity"])
@pytest.mark.parametrize("bits", [2, 4])
def test_bitserial_requantize_epilogue(ks, acts, bits):
    """The fused epilogue (scale, bias, activation, requantize, pack) equals quantizing the float output."""
    rng = np.random.default_rng(13)
    m, k, n_seg = 45, 96, 100  # segment width not a multiple of 64
    n = n_seg * len(acts)
    step, zero = np.float32(0.3), -(2 ** (bits - 1))
    out_steps = np.array([0.11, 0.05][: len(acts)], dtype=np.float32)
    out_zeros = np.array([0, -(2 ** (bits - 1))][: len(acts)], dtype=np.int64)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    alpha = np.abs(w).mean(axis=1).astype(np.float32)
    bias = (0.3 * rng.standard_normal(n)).astype(np.float32)
    planes, usum = ks.quantize_rows(x, step, zero, bits)
    zrs = zero * sign_pm1(w).astype(np.int64).sum(axis=1)
    wp = pack_weight(w)
    y = ks.bgemm_planes_affine(planes, usum, step, wp, alpha, zrs, bias)
    out, sums = ks.bgemm_planes_act_quant(
        planes, usum, step, wp, alpha, zrs, bias, np.array(acts), out_steps, out_zeros, bits
    )
    assert out.shape == (len(acts), m, bits, 2) and sums.shape == (len(acts), m)
    for s, code in enumerate(acts):
        z = _reference_act(y[:, s * n_seg : (s + 1) * n_seg], code).astype(np.float32)
        ref_planes, ref_sum = ks.quantize_rows(np.ascontiguousarray(z), out_steps[s], int(out_zeros[s]), bits)
        # Exact wherever z / step is not within float rounding of a rounding boundary (x.5).
        frac = np.abs(np.abs(z / out_steps[s]) % 1 - 0.5)
        clear = (frac > 1e-4).all(axis=1)
        assert clear.mean() > 0.9
        assert np.array_equal(out[s][clear], ref_planes[clear])
        assert np.array_equal(sums[s][clear], ref_sum[clear])


_PORTABILITY_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from beexformer.engine import kernels as K
    from beexformer.engine.packing import pack_signs, pack_weight, sign_pm1
    rng = np.random.default_rng(0)
    for m, k, n in [(1, 65, 7), (9, 300, 129), (40, 256, 64)]:
        a, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
        ref = sign_pm1(a).astype(np.int64) @ sign_pm1(w).astype(np.int64).T
        assert np.array_equal(K.SERIAL.bgemm_int(pack_signs(a), pack_weight(w), k), ref)
        for bits, zero in [(2, -2), (4, -8), (4, 0)]:
            q = rng.integers(zero, zero + 2**bits, (m, k)).astype(np.float32)
            planes, usum = K.SERIAL.quantize_rows(q, np.float32(1.0), zero, bits)
            zrs = zero * sign_pm1(w).astype(np.int64).sum(axis=1)
            ref = q.astype(np.int64) @ sign_pm1(w).astype(np.int64).T
            assert np.array_equal(K.SERIAL.bgemm_planes_int(planes, usum, pack_weight(w), zrs), ref)
    print("exact")
    """
)


@pytest.mark.parametrize("cpu", ["haswell", "x86-64"], ids=["avx2-only", "baseline-x86-64"])
def test_exact_on_other_cpus(cpu, tmp_path):
    """The same source compiled for an AVX2-only CPU (no AVX-512, no VPOPCNTQ) and for baseline x86-64 (no
    POPCNT instruction at all) still gives the exact product, 1-bit and bit-serial 2-/4-bit."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 CPU names")
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES="", NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", _PORTABILITY_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exact" in result.stdout
