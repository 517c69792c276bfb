"""Numba kernels of the packed runtime: XNOR-popcount GEMM with fused epilogues, and the float pieces
(attention, LayerNorm, pooling) the 1-bit blocks need between their binary linears.

Why these shapes (docs/engine.md has the measurements):

- Weights are word-major uint64 [KW, N] (see `packing`). For one activation row a[m, :KW], the inner loop
  runs over N with unit stride: ``acc[n] += popcount(a[m, kw] ^ w[kw, n])``. LLVM vectorizes it with the
  host's widest popcount (VPOPCNTQ on AVX-512 VPOPCNTDQ, a PSHUFB nibble table on AVX2, scalar POPCNT or a
  bit-trick sequence below that), because numba compiles for the CPU it runs on: the same source is exact
  everywhere and fast where the instruction exists. The cache is keyed by CPU model and features, so a cache
  built on one machine is never used on another.
- dot = K - 2 * popcount(a ^ w) over the real K: the packer leaves the tail bits 0 in both operands.
- Epilogues are fused: y = alpha[n] * (beta[m] * dot + c * rowsum[n]) + bias[n], which is what the PyTorch
  layer computes as F.linear(c + beta * sign(x - c), alpha * sign(W), bias). When the next layer is binary
  too, the epilogue applies the nonlinearity, takes the sign and the per-token scale and writes packed words,
  so activations stay packed between binary layers.
- Every kernel is written once with `prange` and compiled twice: serial (prange runs as range, no thread
  pool is touched: batch size 1) and parallel (large batches). `threads.py` decides which.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from beexformer.engine import simd
from beexformer.engine.jitcache import jit, renamed

# Activation codes of the fused "linear -> nonlinearity -> sign/pack" epilogue.
ACT_IDENTITY, ACT_SIGMOID, ACT_TANH, ACT_GELU, ACT_RELU = 0, 1, 2, 3, 4


@intrinsic
def popcount64(typingctx, x):
    """LLVM's ctpop on a 64-bit word: one instruction where the CPU has it, a correct fallback elsewhere."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


def _bitcast_intrinsic(name: str, src, dst):
    """An intrinsic that reinterprets a `src` value's bits as `dst` (no conversion), so the exp/tanh
    approximations below can write exponent bits without a float-to-int conversion."""

    def typer(typingctx, x):
        if x != src:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    typer.__name__ = typer.__qualname__ = name
    return intrinsic(typer)


_f64_as_i64 = _bitcast_intrinsic("_f64_as_i64", types.float64, types.int64)
_i64_as_f64 = _bitcast_intrinsic("_i64_as_f64", types.int64, types.float64)
_f32_as_i32 = _bitcast_intrinsic("_f32_as_i32", types.float32, types.int32)
_i32_as_f32 = _bitcast_intrinsic("_i32_as_f32", types.int32, types.float32)


# Reductions (sums over features, dot products) may be reordered so LLVM can vectorize them; nothing else of
# fastmath is allowed (no NaN/inf assumptions, no approximate reciprocals). PyTorch sums in its own order too,
# so exact agreement was never possible there; the tests bound the difference.
_FLOAT_FLAGS = {"reassoc", "contract"}


def _jit(parallel: bool, fastmath: set[str] | bool = False):
    # error_model="numpy": a float division is the IEEE instruction, with no zero-divisor check and its Python
    # exception path, which would keep LLVM from vectorizing the loops that divide (quantizers, GELU).
    # Inputs are validated before they reach a kernel; IEEE results are unchanged.
    return jit(nogil=True, fastmath=fastmath, parallel=parallel, error_model="numpy")


_ROUNDER = 6755399441055744.0  # 1.5 * 2**52: adding it rounds a float64 to an integer held in the low bits


@jit(inline="always")
def _exp_nonpos(x):
    """exp(x) for x <= 0 without a libm call, so the loops around it vectorize: x = n ln2 + r (n rounded
    with the 1.5 * 2**52 trick, so no float-to-int conversion), a degree-7 Taylor polynomial for e^r
    (relative error < 1e-8, below float32 rounding), and 2^n written straight into the exponent bits."""
    x = max(x, -700.0)
    t = x * 1.4426950408889634 + _ROUNDER
    n = t - _ROUNDER
    r = x - n * 0.6931471803691238 - n * 1.9082149292705877e-10
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r / 5040))))))
    return p * _i64_as_f64((_f64_as_i64(t) + np.int64(1023)) << np.int64(52))


@jit(inline="always")
def _tanh_abs(u):
    """tanh(u) for u >= 0 as (1 - e) / (1 + e), e = exp(-2u), with the division done by Newton steps from a
    linear first guess (division does not vectorize well here; measured 3x slower). Error < 1e-8."""
    e = _exp_nonpos(-2.0 * u)
    d = 0.5 + 0.5 * e  # in (0.5, 1]
    r = 2.823529411764706 - 1.8823529411764706 * d  # 48/17 - 32/17 d: |1 - d r| <= 1/17
    r = r + r * (1.0 - d * r)
    r = r + r * (1.0 - d * r)
    r = r + r * (1.0 - d * r)
    return (1.0 - e) * 0.5 * r


_F = np.float32


@jit(inline="always")
def _exp32(x):
    """exp(x) for float32 -87 <= x <= 0 (Cephes' expf: 1.5 * 2**23 rounding trick, exponent bits), no libm
    call, so that loops around it vectorize."""
    t = x * _F(1.4426950408889634) + _F(12582912.0)
    n = t - _F(12582912.0)
    r = x - n * _F(0.693359375) - n * _F(-2.12194440e-4)
    p = _F(1.9875691500e-4)
    p = p * r + _F(1.3981999507e-3)
    p = p * r + _F(8.3334519073e-3)
    p = p * r + _F(4.1665795894e-2)
    p = p * r + _F(1.6666665459e-1)
    p = p * r + _F(5.0000001201e-1)
    return (p * r * r + r + _F(1.0)) * _i32_as_f32(np.int32((_f32_as_i32(t) + np.int32(127)) << np.int32(23)))


@jit(inline="always")
def _gelu(y):
    """GELU, exact-erf form (BERT's; torch's approximate="none"), in float32 without a libm call so that the
    loops around it vectorize (a scalar erf per element cost more than the W1A4 GEMMs of a MiniLM layer).
    erfc(z), z = |y| / sqrt(2) (capped at 9: erfc(9) < 1e-36), by Numerical Recipes' Chebyshev fit
    t * exp(-z^2 + P(t)), t = 1 / (1 + z / 2) (relative error < 1.2e-7), then 0.5 y (2 - erfc z) for y >= 0
    and 0.5 y erfc(z) below. Within a few float32 ulps of the exact value, as PyTorch's own float32 erf is."""
    z = min(abs(y) * _F(0.70710678), _F(9.0))
    t = _F(1.0) / (_F(1.0) + _F(0.5) * z)
    p = _F(0.17087277)
    p = p * t + _F(-0.82215223)
    p = p * t + _F(1.48851587)
    p = p * t + _F(-1.13520398)
    p = p * t + _F(0.27886807)
    p = p * t + _F(-0.18628806)
    p = p * t + _F(0.09678418)
    p = p * t + _F(0.37409196)
    p = p * t + _F(1.00002368)
    p = p * t + _F(-1.26551223)
    erfc = t * _exp32(max(min(p - z * z, _F(0.0)), _F(-87.0)))
    half = _F(0.5) * y
    return half * (_F(2.0) - erfc) if y >= _F(0.0) else half * erfc


@jit(inline="always")
def _tanh_abs32(u):
    """tanh(u) for float32 u >= 0, all in float32 (16 lanes per AVX-512 instruction instead of 8: 2.4x faster
    than `_tanh_abs`). `_exp32` for e = exp(-2u), the ratio
    (1 - e) / (1 + e) with Newton steps for the division, and the odd series u - u^3/3 + 2u^5/15 - 17u^7/315
    below u = 0.1, where 1 - e would cancel. Relative error < 1e-6 (the epilogue only averages these)."""
    e = _exp32(max(_F(-2.0) * u, _F(-87.0)))
    d = _F(0.5) + _F(0.5) * e
    q = _F(2.823529411764706) - _F(1.8823529411764706) * d
    q = q + q * (_F(1.0) - d * q)
    q = q + q * (_F(1.0) - d * q)
    q = q + q * (_F(1.0) - d * q)
    big = (_F(1.0) - e) * _F(0.5) * q
    u2 = u * u
    small = u * (_F(1.0) + u2 * (_F(-1.0 / 3.0) + u2 * (_F(2.0 / 15.0) + u2 * _F(-17.0 / 315.0))))
    return small if u < _F(0.1) else big


@jit(nogil=True, fastmath={"contract"}, error_model="numpy")
def _gelu_inplace(y):
    """y[i] = GELU(y[i]) over a row, in a function of its own: fused multiply-adds allowed here (safe for the
    exp's rounding trick), while the quantizing kernels that call it compile without any fastmath."""
    for i in range(y.shape[0]):
        y[i] = _gelu(y[i])


# ----------------------------------------------------------------------------------------------------
# bodies (plain Python functions, compiled below in a serial and a parallel flavour)


@jit(inline="always")
def _sign_word(part, n):
    """The signs of part[:n] as the bits of one word (1 for >= 0)."""
    word = np.uint64(0)
    for i in range(n):
        word |= np.uint64(part[i] >= 0) << np.uint64(i)
    return word


@jit(inline="always")
def _pack_signs_row(z, out):
    """out[j] = the signs of z[64 j : 64 j + 64] as bits (1 for z >= 0); bits past len(z) stay 0. Full words
    go through `_sign_word` with the constant n = 64, so LLVM unrolls the loop into vector compares: 2x
    faster than one loop of run-time length for every word."""
    K = z.shape[0]
    full = K // 64
    for kw in range(full):
        out[kw] = _sign_word(z[kw * 64 : kw * 64 + 64], 64)
    if full < out.shape[0]:
        out[full] = _sign_word(z[full * 64 :], K - full * 64)


def _pack_rows(x, centre):
    """sign(x - c) packed along the last axis and beta = mean|x - c| per row. x: float32 [M, K]."""
    M, K = x.shape
    KW = (K + 63) // 64
    words = np.zeros((M, KW), dtype=np.uint64)
    beta = np.empty(M, dtype=np.float32)
    for m in prange(M):
        xr = x[m]
        if centre == 0:
            z = xr
        else:
            z = np.empty(K, dtype=np.float32)
            for k in range(K):
                z[k] = xr[k] - centre
        total = 0.0
        for k in range(K):
            total += abs(z[k])
        beta[m] = np.float32(total / K)
        _pack_signs_row(z, words[m])
    return words, beta


ROW_BLOCK = 32  # rows per parallel task; also how many rows reuse a tile of W while it sits in L1
COL_TILE = 128  # output columns per tile: KW x 128 words of W = 4-8 KiB for d = 256-512


@jit(inline="always")
def _popcount_tile(arow, w, n0, n1, acc):
    """acc[i] = sum over words kw of popcount(arow[kw] ^ w[kw, n0 + i]) for i < n1 - n0.

    The inner loop runs over output columns with unit stride on 1-D views: LLVM vectorizes it with the host's
    popcount (2-D indexing there defeated the vectorizer, 10x slower)."""
    KW = w.shape[0]
    width = n1 - n0
    for i in range(width):
        acc[i] = 0
    # two weight words per pass: the running sums go through memory half as often (8-15 % faster at MiniLM's
    # shapes; four per pass was no better). The odd last word is a loop, not an `if`: with the `if`, LLVM's
    # code for the whole tile came out 25-40 % slower at K = 384 (measured side by side, same process).
    k2 = KW - KW % 2
    for kw in range(0, k2, 2):
        a0, a1 = arow[kw], arow[kw + 1]
        w0, w1 = w[kw, n0:n1], w[kw + 1, n0:n1]
        for i in range(width):
            acc[i] += popcount64(a0 ^ w0[i]) + popcount64(a1 ^ w1[i])
    for kw in range(k2, KW):
        av = arow[kw]
        wrow = w[kw, n0:n1]
        for i in range(width):
            acc[i] += popcount64(av ^ wrow[i])


def _bgemm_int(a, w, K):
    """The integer product sign(A) @ sign(W)^T from packed operands: int32 [M, N]."""
    M = a.shape[0]
    N = w.shape[1]
    out = np.empty((M, N), dtype=np.int32)
    full = N - N % simd.TILE
    for mb in prange((M + ROW_BLOCK - 1) // ROW_BLOCK):
        m0, m1 = mb * ROW_BLOCK, min(M, mb * ROW_BLOCK + ROW_BLOCK)
        # tiles of simd.TILE columns, their weights in L1 while the block's rows pass (register sums)
        for n0 in range(0, full, simd.TILE):
            for m in range(m0, m1):
                simd.xor_tile_int(a[m], w, n0, K, out[m])
        if full < N:  # the last columns (fewer than a tile): the scalar tile
            acc = np.empty(COL_TILE, dtype=np.uint64)
            for m in range(m0, m1):
                _popcount_tile(a[m], w, full, N, acc)
                orow = out[m, full:N]
                for i in range(N - full):
                    orow[i] = np.int32(K - 2 * np.int64(acc[i]))
    return out


@jit(inline="always")
def _affine_rows(a, beta, w, alpha, crs, bias, K, m0, m1, out, row0):
    """out[m - row0] = alpha * (beta[m] * dot + crs) + bias for rows m0 <= m < m1: the XNOR GEMM with its
    affine epilogue, full tiles in registers (`simd`), the last N % TILE columns by the scalar tile."""
    N = w.shape[1]
    full = N - N % simd.TILE
    for n0 in range(0, full, simd.TILE):
        for m in range(m0, m1):
            simd.xor_tile_affine(a[m], w, n0, K, beta[m], alpha, crs, bias, out[m - row0])
    if full < N:
        acc = np.empty(COL_TILE, dtype=np.uint64)
        al, cr, bi = alpha[full:], crs[full:], bias[full:]
        for m in range(m0, m1):
            _popcount_tile(a[m], w, full, N, acc)
            bm = beta[m]
            orow = out[m - row0, full:]
            for i in range(N - full):
                orow[i] = al[i] * (bm * np.float32(K - 2 * np.int64(acc[i])) + cr[i]) + bi[i]


def _bgemm_affine(a, beta, w, alpha, crs, bias, K):
    """y[m, n] = alpha[n] * (beta[m] * dot[m, n] + crs[n]) + bias[n], float32 [M, N]; crs = c * rowsum."""
    M = a.shape[0]
    N = w.shape[1]
    out = np.empty((M, N), dtype=np.float32)
    for mb in prange((M + ROW_BLOCK - 1) // ROW_BLOCK):
        m0, m1 = mb * ROW_BLOCK, min(M, mb * ROW_BLOCK + ROW_BLOCK)
        _affine_rows(a, beta, w, alpha, crs, bias, K, m0, m1, out, 0)
    return out


@jit(inline="always")
def _activation(y, code):
    if code == ACT_SIGMOID:
        return np.float32(np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(-y))))
    if code == ACT_TANH:
        return np.float32(math.tanh(y))
    if code == ACT_GELU:
        return _gelu(y)
    if code == ACT_RELU:
        return y if y > 0 else np.float32(0.0)
    return y


def _bgemm_act_pack(a, beta, w, alpha, crs, bias, K, acts, centres):
    """A binary linear whose output feeds binary linears: N splits into S = len(acts) equal segments;
    segment s gets z = act_s(y) - centre_s, and the kernel writes sign(z) packed ([S, M, ceil(N/S / 64)])
    and mean|z| per row ([S, M]) instead of the float output.

    For the SLFN's branches the sign needs no transcendental: sign(tanh(y)) = sign(y), and
    sign(sigmoid(y) - 0.5) = sign(y) except for tiny negative y, where float32 sigmoid(y) rounds to exactly
    0.5 and the sign is +1 (those few values take the exact route). The magnitudes use
    |sigmoid(y) - 0.5| = tanh(|y| / 2) / 2 and |tanh(y)|, on a vectorizable tanh (`_tanh_abs`)."""
    M, KW = a.shape
    N = w.shape[1]
    S = acts.shape[0]
    NS = N // S
    NW = (NS + 63) // 64
    words = np.zeros((S, M, NW), dtype=np.uint64)
    betas = np.empty((S, M), dtype=np.float32)
    for mb in prange((M + ROW_BLOCK - 1) // ROW_BLOCK):
        m0, m1 = mb * ROW_BLOCK, min(M, mb * ROW_BLOCK + ROW_BLOCK)
        ys = np.empty((m1 - m0, N), dtype=np.float32)
        _affine_rows(a, beta, w, alpha, crs, bias, K, m0, m1, ys, m0)
        for m in range(m0, m1):
            _act_pack_row(ys[m - m0], acts, centres, words[:, m], betas[:, m])
    return words, betas


@jit(nogil=True, fastmath={"contract"}, error_model="numpy")
def _tanh_abs_inplace(y, scale):
    """y[i] = tanh(scale * |y[i]|) over a row, in a function of its own as `_gelu_inplace` (no "reassoc",
    which may fold `_exp32`'s rounding trick); the sum over the row is a separate loop: 1.5x faster than the
    transcendental inside the summing loop."""
    for i in range(y.shape[0]):
        y[i] = _tanh_abs32(scale * abs(y[i]))


@jit(inline="always")
def _fix_tiny_sigmoid_signs(seg, out):
    """For -1e-6 < y < 0, float32 sigmoid(y) may round to exactly 0.5, whose sign is +1 (rare: only those)."""
    tiny = 0
    for i in range(seg.shape[0]):
        tiny += (seg[i] < _F(0.0)) & (seg[i] > _F(-1e-6))
    if tiny:
        for i in range(seg.shape[0]):
            v = seg[i]
            if v < 0 and v > -1e-6 and _activation(v, ACT_SIGMOID) - np.float32(0.5) >= 0:
                out[i // 64] |= np.uint64(1) << np.uint64(i % 64)


@jit(fastmath=_FLOAT_FLAGS)
def _act_pack_row(y, acts, centres, words, betas):
    """Epilogue of `_bgemm_act_pack` for one row y [N]: writes words [S, NW] and betas [S] (output views).
    y is the kernel's scratch row: the activations overwrite it in place."""
    N = y.shape[0]
    S = acts.shape[0]
    NS = N // S
    for s in range(S):
        code = acts[s]
        seg = y[s * NS : (s + 1) * NS]
        out = words[s]
        total = 0.0
        if code in (ACT_SIGMOID, ACT_TANH):
            _pack_signs_row(seg, out)  # sign(tanh y) = sign(y); sign(sigmoid(y) - 1/2) too, but for tiny y
            if code == ACT_SIGMOID:
                _fix_tiny_sigmoid_signs(seg, out)
                _tanh_abs_inplace(seg, _F(0.5))  # |sigmoid(y) - 0.5| = tanh(|y| / 2) / 2
            else:
                _tanh_abs_inplace(seg, _F(1.0))
            for i in range(NS):
                total += seg[i]
            if code == ACT_SIGMOID:
                total *= 0.5
        else:
            # The activation first, in a loop of its own (GELU vectorizes there; inside the packing loop it
            # did not and cost 10x the GEMM), then |z| and the signs.
            c = centres[s]
            if code == ACT_GELU:
                _gelu_inplace(seg)
                if c != 0:
                    for i in range(NS):
                        seg[i] = seg[i] - c
            else:
                for i in range(NS):
                    seg[i] = np.float32(_activation(seg[i], code) - c)
            for i in range(NS):
                total += abs(seg[i])
            _pack_signs_row(seg, out)
        betas[s] = np.float32(total / NS)


# ----------------------------------------------------------------------------------------------------
# 1-bit weights x 1-, 2- and 4-bit quantized activations, bit-serial over the code's bit planes
#
# `beexformer.quantizers` defines a k-bit activation (LSQ at k = 2, 4; the elastic sign at k = 1) as the
# integer code n = clamp(floor((x - b) / s + (z + 1/2)), 0, 2^k - 1) and the value s * (n - z), with the
# zero point z = (2^k - 1) / 2 (signed: half-integer levels) or 0 (non-negative inputs). The code's bit planes
# are packed like signs: planes[m, j, kw] holds bit j of n for the 64 inputs of word kw (tails 0). With
# w = 2 * bit(W) - 1 and z2 = 2z (an integer):
#     2 * sum_k (n_k - z) w_k = 2 * (2 * sum_j 2^j popcount(n_j & W) - sum_k n_k) - z2 * rowsum(w)
# so one accumulator per output column collects popcount(plane_j & W) << j, and the epilogue adds two
# integer corrections (the code sum per row, z2 * rowsum per column): twice the dot product, exact in
# integers; the float output is alpha * ((s / 2) * dot2) + bias (s / 2 is exact).


@jit(inline="always")
def _plane_tile(arow, w, n0, n1, acc):
    """acc[i] = sum_j 2^j sum_kw popcount(arow[j, kw] & w[kw, n0 + i]) for i < n1 - n0; arow: [B, KW].

    As `_popcount_tile`, the inner loop runs over output columns on 1-D views; each weight word is loaded once
    for all planes (B = 1, 2 and 4 are spelled out so LLVM keeps the planes in registers)."""
    B = arow.shape[0]
    KW = w.shape[0]
    width = n1 - n0
    for i in range(width):
        acc[i] = 0
    for kw in range(KW):
        wrow = w[kw, n0:n1]
        if B == 1:
            a0 = arow[0, kw]
            for i in range(width):
                acc[i] += popcount64(a0 & wrow[i])
        elif B == 2:
            a0, a1 = arow[0, kw], arow[1, kw]
            for i in range(width):
                wv = wrow[i]
                acc[i] += popcount64(a0 & wv) + (popcount64(a1 & wv) << np.uint64(1))
        elif B == 4:
            a0, a1, a2, a3 = arow[0, kw], arow[1, kw], arow[2, kw], arow[3, kw]
            for i in range(width):
                wv = wrow[i]
                acc[i] += (
                    popcount64(a0 & wv)
                    + (popcount64(a1 & wv) << np.uint64(1))
                    + (popcount64(a2 & wv) << np.uint64(2))
                    + (popcount64(a3 & wv) << np.uint64(3))
                )
        else:
            for j in range(B):
                aj = arow[j, kw]
                shift = np.uint64(j)
                for i in range(width):
                    acc[i] += popcount64(aj & wrow[i]) << shift


@jit(inline="always")
def _plane_word(codes, n, shift):
    """Bit `shift` of codes[:n] as the bits of one word."""
    word = np.uint64(0)
    for i in range(n):
        word |= ((codes[i] >> shift) & np.uint64(1)) << np.uint64(i)
    return word


@jit(inline="always")
def _quantize_row(x, step, threshold, offset, planes):
    """Codes n = clamp(floor((x - threshold) / step + offset), 0, 2^B - 1) of one row x [K] (offset = z + 1/2),
    written as bit planes [B, KW] (tails 0); returns sum(n). Computed in float32 in the order of
    `quantizers.quantize_codes`, with no fastmath: the division and the floor must be the IEEE operations
    PyTorch performs (x - 0 is x exactly, so layers without a threshold pass 0). Full words of 64 inputs run
    as vector code with the planes taken from vector compares (`simd.quantize_words*`); the last partial word
    (and more than 4 planes) runs the loops: the codes to a small buffer first, then each plane is one
    OR-reduction."""
    K = x.shape[0]
    B, KW = planes.shape
    step, threshold, offset = np.float32(step), np.float32(threshold), np.float32(offset)
    top = np.float32((1 << B) - 1)
    total = 0
    first = 0  # full words go through the vector code (`simd.quantize_words*`), the rest through the loops below
    if B <= simd.MAX_PLANES:
        first = K // 64
        if B == 1:
            total = simd.quantize_words1(x, step, threshold, offset, planes)
        elif B == 2:
            total = simd.quantize_words2(x, step, threshold, offset, planes)
        elif B == 3:
            total = simd.quantize_words3(x, step, threshold, offset, planes)
        else:
            total = simd.quantize_words4(x, step, threshold, offset, planes)
    codes = np.empty(64, dtype=np.uint64)
    for kw in range(first, KW):
        part = x[kw * 64 : min(K, kw * 64 + 64)]
        width = part.shape[0]
        word_total = np.uint64(0)
        for i in range(width):
            q = min(max(np.floor((part[i] - threshold) / step + offset), np.float32(0.0)), top)
            codes[i] = np.uint64(q)
            word_total += codes[i]
        total += np.int64(word_total)
        for j in range(B):
            if width == 64:  # the constant trip count lets LLVM unroll and vectorize it (as `_sign_word`)
                planes[j, kw] = _plane_word(codes, 64, np.uint64(j))
            else:
                planes[j, kw] = _plane_word(codes, width, np.uint64(j))
    return total


def _quantize_rows(x, step, threshold, offset, bits):
    """Quantize float32 rows x [M, K] to `bits`-bit codes: planes uint64 [M, bits, KW], code sums int64 [M]."""
    M, K = x.shape
    KW = (K + 63) // 64
    planes = np.empty((M, bits, KW), dtype=np.uint64)
    usum = np.empty(M, dtype=np.int64)
    for m in prange(M):
        usum[m] = _quantize_row(x[m], step, threshold, offset, planes[m])
    return planes, usum


@jit(inline="always")
def _planes_simd_int(arow, w, n0, usum2, corr, orow):
    """One register tile of the bit-serial integer product (`simd`; the plane count is a compile-time
    constant there, so it is dispatched here)."""
    B = arow.shape[0]
    if B == 1:
        simd.plane1_int(arow, w, n0, usum2, corr, orow)
    elif B == 2:
        simd.plane2_int(arow, w, n0, usum2, corr, orow)
    elif B == 3:
        simd.plane3_int(arow, w, n0, usum2, corr, orow)
    else:
        simd.plane4_int(arow, w, n0, usum2, corr, orow)


@jit(inline="always")
def _planes_simd_affine(arow, w, n0, usum2, corr, hs, alpha, bias, orow):
    B = arow.shape[0]
    if B == 1:
        simd.plane1_affine(arow, w, n0, usum2, corr, hs, alpha, bias, orow)
    elif B == 2:
        simd.plane2_affine(arow, w, n0, usum2, corr, hs, alpha, bias, orow)
    elif B == 3:
        simd.plane3_affine(arow, w, n0, usum2, corr, hs, alpha, bias, orow)
    else:
        simd.plane4_affine(arow, w, n0, usum2, corr, hs, alpha, bias, orow)


@jit(inline="always")
def _simd_columns(a, w):
    """Columns covered by full register tiles (the bit-serial tiles exist for 1 to 4 planes)."""
    N = w.shape[1]
    return N - N % simd.TILE if a.shape[1] <= simd.MAX_PLANES else 0


def _bgemm_planes_int(a, usum, w, corr):
    """Twice the integer product (N - z) @ sign(W)^T from bit planes a [M, B, KW], code sums usum [M] and
    corr[n] = z2 * rowsum(sign W[n]) (int64): int32 [M, N]."""
    M = a.shape[0]
    N = w.shape[1]
    out = np.empty((M, N), dtype=np.int32)
    full = _simd_columns(a, w)
    for mb in prange((M + ROW_BLOCK - 1) // ROW_BLOCK):
        m0, m1 = mb * ROW_BLOCK, min(M, mb * ROW_BLOCK + ROW_BLOCK)
        for n0 in range(0, full, simd.TILE):
            for m in range(m0, m1):
                _planes_simd_int(a[m], w, n0, 2 * usum[m], corr, out[m])
        acc = np.empty(COL_TILE if full < N else 0, dtype=np.uint64)
        for n0 in range(full, N, COL_TILE):
            n1 = min(N, n0 + COL_TILE)
            cr = corr[n0:n1]
            for m in range(m0, m1):
                _plane_tile(a[m], w, n0, n1, acc)
                us = 2 * usum[m]
                orow = out[m, n0:n1]
                for i in range(n1 - n0):
                    orow[i] = np.int32(4 * np.int64(acc[i]) - us - cr[i])
    return out


@jit(inline="always")
def _planes_affine_rows(a, usum, hs, w, alpha, corr, bias, m0, m1, out, row0):
    """out[m - row0] = alpha * (hs * dot2) + bias for rows m0 <= m < m1: register tiles, then the scalar
    tile for the last columns."""
    N = w.shape[1]
    full = _simd_columns(a, w)
    for n0 in range(0, full, simd.TILE):
        for m in range(m0, m1):
            _planes_simd_affine(a[m], w, n0, 2 * usum[m], corr, hs, alpha, bias, out[m - row0])
    acc = np.empty(COL_TILE if full < N else 0, dtype=np.uint64)
    for n0 in range(full, N, COL_TILE):
        n1 = min(N, n0 + COL_TILE)
        al, cr, bi = alpha[n0:n1], corr[n0:n1], bias[n0:n1]
        for m in range(m0, m1):
            _plane_tile(a[m], w, n0, n1, acc)
            us = 2 * usum[m]
            orow = out[m - row0, n0:n1]
            for i in range(n1 - n0):
                dot2 = np.float32(4 * np.int64(acc[i]) - us - cr[i])
                orow[i] = al[i] * (hs * dot2) + bi[i]


def _bgemm_planes_affine(a, usum, half_step, w, alpha, corr, bias):
    """y[m, n] = alpha[n] * (half_step * dot2[m, n]) + bias[n], float32 [M, N]: what the PyTorch layer computes
    as F.linear(s * (n - z), alpha * sign(W), bias), with half_step = s / 2."""
    M = a.shape[0]
    N = w.shape[1]
    hs = np.float32(half_step)
    out = np.empty((M, N), dtype=np.float32)
    for mb in prange((M + ROW_BLOCK - 1) // ROW_BLOCK):
        m0, m1 = mb * ROW_BLOCK, min(M, mb * ROW_BLOCK + ROW_BLOCK)
        _planes_affine_rows(a, usum, hs, w, alpha, corr, bias, m0, m1, out, 0)
    return out


def _bgemm_planes_act_quant(
    a, usum, half_step, w, alpha, corr, bias, act, out_step, out_threshold, out_offset, out_bits
):
    """A bit-serial linear whose output feeds a bit-serial linear: y -> act(y) -> that layer's codes, written
    as planes [M, out_bits, ceil(N / 64)] with code sums [M] instead of the float output."""
    M = a.shape[0]
    N = w.shape[1]
    NW = (N + 63) // 64
    hs = np.float32(half_step)
    planes = np.empty((M, out_bits, NW), dtype=np.uint64)
    usums = np.empty(M, dtype=np.int64)
    for mb in prange((M + ROW_BLOCK - 1) // ROW_BLOCK):
        m0, m1 = mb * ROW_BLOCK, min(M, mb * ROW_BLOCK + ROW_BLOCK)
        ys = np.empty((m1 - m0, N), dtype=np.float32)
        _planes_affine_rows(a, usum, hs, w, alpha, corr, bias, m0, m1, ys, m0)
        for m in range(m0, m1):
            yrow = ys[m - m0]
            if act == ACT_GELU:
                _gelu_inplace(yrow)
            elif act != ACT_IDENTITY:
                for i in range(N):
                    yrow[i] = _activation(yrow[i], act)
            usums[m] = _quantize_row(yrow, out_step, out_threshold, out_offset, planes[m])
    return planes, usums


def _attention(qkv, offsets, n_heads):
    """Softmax self-attention of each sample over its own tokens (rows offsets[b]:offsets[b+1] of the ragged
    batch, so padding is never computed). qkv: float32 [Ntok, 3d] = [q | k | v]; returns context [Ntok, d].

    Per (sample, head), q, k and v are copied into contiguous [T, dh] blocks and the two products, Q K^T and
    P V, are BLAS sgemm calls (numba's np.dot calls the BLAS without going through Python). At 25 tokens and
    12 heads of 32 this was 2x faster than the loops that stood here (their inner loops ran over T = 25 or
    dh = 32 elements, so loop set-up and remainders cost more than the arithmetic). The softmax uses the
    float32 `_exp32` (no libm call). Scores and softmax are float32 like PyTorch's; only the summation order
    differs. prange over samples (the parallel flavour runs only on batches of many rows)."""
    ntok = qkv.shape[0]
    d = qkv.shape[1] // 3
    dh = d // n_heads
    scale = np.float32(math.sqrt(dh))
    ctx = np.empty((ntok, d), dtype=np.float32)
    B = offsets.shape[0] - 1
    for b in prange(B):
        start, stop = offsets[b], offsets[b + 1]
        T = stop - start
        qh = np.empty((T, dh), dtype=np.float32)
        kh = np.empty((T, dh), dtype=np.float32)
        vh = np.empty((T, dh), dtype=np.float32)
        for h in range(n_heads):
            qo, ko, vo = h * dh, d + h * dh, 2 * d + h * dh
            for t in range(T):
                row = qkv[start + t]
                qr, kr, vr = qh[t], kh[t], vh[t]
                for e in range(dh):
                    qr[e] = row[qo + e]
                    kr[e] = row[ko + e]
                    vr[e] = row[vo + e]
            scores = np.dot(qh, kh.T)  # [T, T]
            for i in range(T):
                srow = scores[i]
                top = np.float32(-np.inf)
                for j in range(T):
                    srow[j] = srow[j] / scale
                    top = max(top, srow[j])
                total = np.float32(0.0)
                for j in range(T):
                    p = _exp32(max(srow[j] - top, _F(-87.0)))
                    srow[j] = p
                    total += p
                for j in range(T):
                    srow[j] = srow[j] / total
            out = np.dot(scores, vh)  # [T, dh]
            for t in range(T):
                crow, orow = ctx[start + t], out[t]
                for e in range(dh):
                    crow[qo + e] = orow[e]
    return ctx


def _layernorm(x, gamma, beta, eps):
    M, D = x.shape
    out = np.empty((M, D), dtype=np.float32)
    for m in prange(M):
        xr = x[m]
        orow = out[m]
        mean = 0.0
        for k in range(D):
            mean += xr[k]
        mean /= D
        var = 0.0
        for k in range(D):
            diff = xr[k] - mean
            var += diff * diff
        var /= D
        rstd = np.float32(1.0 / math.sqrt(var + eps))
        mu = np.float32(mean)
        for k in range(D):
            orow[k] = (xr[k] - mu) * rstd * gamma[k] + beta[k]
    return out


def _add(x, y):
    M, D = x.shape
    out = np.empty((M, D), dtype=np.float32)
    for m in prange(M):
        xr, yr, orow = x[m], y[m], out[m]
        for k in range(D):
            orow[k] = xr[k] + yr[k]
    return out


def _gated_add(h, s, f):
    """h + s * f: the SLFN's two branches multiplied and added to the residual."""
    M, D = h.shape
    out = np.empty((M, D), dtype=np.float32)
    for m in prange(M):
        hr, sr, fr, orow = h[m], s[m], f[m], out[m]
        for k in range(D):
            orow[k] = hr[k] + sr[k] * fr[k]
    return out


def _mean_pool(x, offsets):
    """Mean of each sample's token rows: [B, d]. Rows are added whole (the loop over d vectorizes; a loop over
    tokens per column ran scalar on strided loads), each column still summed in token order."""
    B = offsets.shape[0] - 1
    D = x.shape[1]
    out = np.zeros((B, D), dtype=np.float32)
    for b in prange(B):
        start, stop = offsets[b], offsets[b + 1]
        orow = out[b]
        for t in range(start, stop):
            xr = x[t]
            for k in range(D):
                orow[k] += xr[k]
        count = np.float32(max(stop - start, 1))
        for k in range(D):
            orow[k] = orow[k] / count
    return out


def _float_linear(x, wt, bias):
    """x [M, K] @ wt [K, N] + bias, float32 (the exit MLPs: tiny, so no BLAS call overhead)."""
    M, K = x.shape
    N = wt.shape[1]
    out = np.empty((M, N), dtype=np.float32)
    for m in prange(M):
        acc = np.zeros(N, dtype=np.float32)
        for k in range(K):
            xv = x[m, k]
            wrow = wt[k]
            for n in range(N):
                acc[n] += xv * wrow[n]
        orow = out[m]
        for n in range(N):
            orow[n] = acc[n] + bias[n]
    return out


def _gelu_rows(x):
    """GELU of every element of x [M, N] (the float path's FFN)."""
    M, N = x.shape
    out = x.copy()
    for m in prange(M):
        _gelu_inplace(out[m])
    return out


@jit(inline="always")
def _unpack_word(word, s, out, n):
    """out[i] = s where bit i of word is set, else -s, for i < n."""
    for i in range(n):
        out[i] = s if (word >> np.uint64(i)) & np.uint64(1) else -s


def _embed_binary(bits, scale, ids, K):
    """Rows of a 1-bit table: out[t] = scale[ids[t]] * sign bits of row ids[t] (ids already range-checked). Full
    words with the constant trip count 64, which LLVM turns into vector code (a loop over k with k // 64 and
    k % 64 per element ran scalar)."""
    T = ids.shape[0]
    KW = (K + 63) // 64
    out = np.empty((T, K), dtype=np.float32)
    for t in prange(T):
        row = ids[t]
        s = scale[row]
        orow = out[t]
        for kw in range(K // 64):
            _unpack_word(bits[row, kw], s, orow[kw * 64 : kw * 64 + 64], 64)
        if K % 64:
            _unpack_word(bits[row, KW - 1], s, orow[(KW - 1) * 64 :], K % 64)
    return out


@jit(inline="always")
def _sign_tiles(x, m0, rows, signs, nw, totals, alpha, bias, out):
    """One tile of `_sign_gemm` (`simd`; the row count is a compile-time constant there)."""
    if rows == 4:
        simd.sign_tile4(x, m0, signs, nw, totals, alpha, bias, out)
    elif rows == 3:
        simd.sign_tile3(x, m0, signs, nw, totals, alpha, bias, out)
    elif rows == 2:
        simd.sign_tile2(x, m0, signs, nw, totals, alpha, bias, out)
    else:
        simd.sign_tile1(x, m0, signs, nw, totals, alpha, bias, out)


def _sign_gemm(x, signs, alpha, bias):
    """A W1A32 linear, y = x @ (alpha * sign W)^T + bias, from float32 x [M, K] and the signs packed along the
    outputs (`packing.pack_signs(W.T)`: [K, ceil(N / 64)], bit n % 64 of word n // 64 set where W[n, k] >= 0).
    With P = the sum of x over the +1 weights and S = sum(x), the dot product is 2 P - S: one masked add per
    16 products in registers (`simd.sign_tile*`), reading 1 bit per weight instead of 4 bytes."""
    M, K = x.shape
    N = alpha.shape[0]
    out = np.empty((M, N), dtype=np.float32)
    totals = np.empty(M, dtype=np.float32)
    for m in range(M):
        total = np.float32(0.0)
        xr = x[m]
        for k in range(K):
            total += xr[k]
        totals[m] = total
    full = N // simd.SIGN_COLUMNS
    for mb in prange((M + simd.SIGN_ROWS - 1) // simd.SIGN_ROWS):
        m0 = mb * simd.SIGN_ROWS
        rows = min(simd.SIGN_ROWS, M - m0)
        for nw in range(full):
            _sign_tiles(x, m0, rows, signs, nw, totals, alpha, bias, out)
        for m in range(m0, m0 + rows):  # the last N % 64 columns
            xr = x[m]
            for n in range(full * simd.SIGN_COLUMNS, N):
                word, bit = n // 64, np.uint64(n % 64)
                p = np.float32(0.0)
                for k in range(K):
                    if (signs[k, word] >> bit) & np.uint64(1):
                        p += xr[k]
                out[m, n] = alpha[n] * (np.float32(2.0) * p - totals[m]) + bias[n]
    return out


def _without_channels(x, channels):
    """x [M, K] with the given columns set to 0 (a copy; x itself when there are none): a quantizer's input
    with its outlier channels taken out (`quantizers`: they bypass the codes)."""
    if channels.shape[0] == 0:
        return x
    out = x.copy()
    for m in prange(x.shape[0]):
        for c in channels:
            out[m, c] = np.float32(0.0)
    return out


def _add_channels(y, x, channels, signed_alpha, zero_level):
    """y[m, n] += sum_k (x[m, c_k] - zero_level) * signed_alpha[k, n], in place: the outlier channels c_k at
    full precision in place of the level `zero_level` their zeroed input got in the integer product
    (signed_alpha[k] = alpha * sign(W[:, c_k]))."""
    for m in prange(y.shape[0]):
        for k in range(channels.shape[0]):
            d = x[m, channels[k]] - zero_level
            for n in range(y.shape[1]):
                y[m, n] += d * signed_alpha[k, n]


# (not gelu_rows: "reassoc" would let LLVM fold the exp's rounding trick (x + R) - R into x)
_FLOAT_KERNELS = {"pack_rows", "bgemm_act_pack", "attention", "layernorm", "mean_pool", "float_linear", "sign_gemm"}

_BODIES = {
    "embed_binary": _embed_binary,
    "pack_rows": _pack_rows,
    "bgemm_int": _bgemm_int,
    "bgemm_affine": _bgemm_affine,
    "bgemm_act_pack": _bgemm_act_pack,
    "quantize_rows": _quantize_rows,
    "bgemm_planes_int": _bgemm_planes_int,
    "bgemm_planes_affine": _bgemm_planes_affine,
    "bgemm_planes_act_quant": _bgemm_planes_act_quant,
    "attention": _attention,
    "layernorm": _layernorm,
    "add": _add,
    "gated_add": _gated_add,
    "mean_pool": _mean_pool,
    "float_linear": _float_linear,
    "gelu_rows": _gelu_rows,
    "sign_gemm": _sign_gemm,
    "without_channels": _without_channels,
    "add_channels": _add_channels,
}


class KernelSet:
    """One flavour (serial or parallel) of every kernel, as attributes: ks.bgemm_affine(...)."""

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel
        flavour = "parallel" if parallel else "serial"
        for name, body in _BODIES.items():
            flags = _FLOAT_FLAGS if name in _FLOAT_KERNELS else False
            # a copy per flavour: each needs its own cache entry (`jitcache.renamed` says why)
            setattr(self, name, _jit(parallel, flags)(renamed(body, f"{body.__name__}_{flavour}")))


SERIAL = KernelSet(parallel=False)
PARALLEL = KernelSet(parallel=True)
