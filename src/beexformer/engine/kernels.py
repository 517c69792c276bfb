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
from numba import njit, prange, types
from numba.extending import intrinsic

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


def _jit(parallel: bool):
    return njit(cache=True, nogil=True, fastmath=False, parallel=parallel)


# --------------------------------------------------------------------------------------------------------------
# bodies (plain Python functions, compiled below in a serial and a parallel flavour)


def _pack_rows(x, centre):
    """sign(x - c) packed along the last axis and beta = mean|x - c| per row. x: float32 [M, K]."""
    M, K = x.shape
    KW = (K + 63) // 64
    words = np.zeros((M, KW), dtype=np.uint64)
    beta = np.empty(M, dtype=np.float32)
    for m in prange(M):
        total = 0.0
        for kw in range(KW):
            word = np.uint64(0)
            stop = min(K, kw * 64 + 64)
            for k in range(kw * 64, stop):
                z = np.float32(x[m, k] - centre)
                total += abs(z)
                if z >= 0:
                    word |= np.uint64(1) << np.uint64(k - kw * 64)
            words[m, kw] = word
        beta[m] = np.float32(total / K)
    return words, beta


def _bgemm_int(a, w, K):
    """The integer product sign(A) @ sign(W)^T from packed operands: int32 [M, N]."""
    M, KW = a.shape
    N = w.shape[1]
    out = np.empty((M, N), dtype=np.int32)
    for m in prange(M):
        acc = np.zeros(N, dtype=np.uint64)
        for kw in range(KW):
            av = a[m, kw]
            for n in range(N):
                acc[n] += popcount64(av ^ w[kw, n])
        for n in range(N):
            out[m, n] = np.int32(K - 2 * np.int64(acc[n]))
    return out


def _bgemm_affine(a, beta, w, alpha, crs, bias, K):
    """y[m, n] = alpha[n] * (beta[m] * dot[m, n] + crs[n]) + bias[n], float32 [M, N]; crs = c * rowsum."""
    M, KW = a.shape
    N = w.shape[1]
    out = np.empty((M, N), dtype=np.float32)
    for m in prange(M):
        acc = np.zeros(N, dtype=np.uint64)
        for kw in range(KW):
            av = a[m, kw]
            for n in range(N):
                acc[n] += popcount64(av ^ w[kw, n])
        bm = beta[m]
        for n in range(N):
            dot = np.float32(K - 2 * np.int64(acc[n]))
            out[m, n] = alpha[n] * (bm * dot + crs[n]) + bias[n]
    return out


def _activation(y, code):
    if code == ACT_SIGMOID:
        return np.float32(np.float32(1.0) / (np.float32(1.0) + np.float32(math.exp(-y))))
    if code == ACT_TANH:
        return np.float32(math.tanh(y))
    if code == ACT_GELU:
        return np.float32(0.5 * y * (1.0 + math.erf(y / math.sqrt(2.0))))
    if code == ACT_RELU:
        return y if y > 0 else np.float32(0.0)
    return y


def _bgemm_act_pack(a, beta, w, alpha, crs, bias, K, acts, centres):
    """A binary linear whose output feeds binary linears: N splits into S = len(acts) equal segments; segment s
    gets z = act_s(y) - centre_s, and the kernel writes sign(z) packed ([S, M, ceil(N/S / 64)]) and
    mean|z| per row ([S, M]) instead of the float output."""
    M, KW = a.shape
    N = w.shape[1]
    S = acts.shape[0]
    NS = N // S
    NW = (NS + 63) // 64
    words = np.zeros((S, M, NW), dtype=np.uint64)
    betas = np.empty((S, M), dtype=np.float32)
    for m in prange(M):
        acc = np.zeros(N, dtype=np.uint64)
        for kw in range(KW):
            av = a[m, kw]
            for n in range(N):
                acc[n] += popcount64(av ^ w[kw, n])
        bm = beta[m]
        for s in range(S):
            code = acts[s]
            c = centres[s]
            total = 0.0
            for j in range(NW):
                word = np.uint64(0)
                stop = min(NS, j * 64 + 64)
                for i in range(j * 64, stop):
                    n = s * NS + i
                    dot = np.float32(K - 2 * np.int64(acc[n]))
                    y = np.float32(alpha[n] * (bm * dot + crs[n]) + bias[n])
                    z = np.float32(_activation(y, code) - c)
                    total += abs(z)
                    if z >= 0:
                        word |= np.uint64(1) << np.uint64(i - j * 64)
                words[s, m, j] = word
            betas[s, m] = np.float32(total / NS)
    return words, betas


def _attention(qkv, offsets, n_heads):
    """Softmax self-attention of each sample over its own tokens (rows offsets[b]:offsets[b+1] of the ragged
    batch, so padding is never computed). qkv: float32 [Ntok, 3d] = [q | k | v]; returns context [Ntok, d]."""
    ntok = qkv.shape[0]
    d = qkv.shape[1] // 3
    dh = d // n_heads
    scale = np.float32(math.sqrt(dh))
    ctx = np.zeros((ntok, d), dtype=np.float32)
    B = offsets.shape[0] - 1
    for task in prange(B * n_heads):
        b = task // n_heads
        h = task % n_heads
        start, stop = offsets[b], offsets[b + 1]
        T = stop - start
        scores = np.empty(T, dtype=np.float32)
        qo, ko, vo = h * dh, d + h * dh, 2 * d + h * dh
        for i in range(T):
            top = np.float32(-np.inf)
            for j in range(T):
                s = np.float32(0.0)
                for e in range(dh):
                    s += qkv[start + i, qo + e] * qkv[start + j, ko + e]
                s = s / scale
                scores[j] = s
                if s > top:
                    top = s
            total = np.float32(0.0)
            for j in range(T):
                p = np.float32(math.exp(scores[j] - top))
                scores[j] = p
                total += p
            for j in range(T):
                p = scores[j] / total
                for e in range(dh):
                    ctx[start + i, h * dh + e] += p * qkv[start + j, vo + e]
    return ctx


def _layernorm(x, gamma, beta, eps):
    M, D = x.shape
    out = np.empty((M, D), dtype=np.float32)
    for m in prange(M):
        mean = 0.0
        for k in range(D):
            mean += x[m, k]
        mean /= D
        var = 0.0
        for k in range(D):
            diff = x[m, k] - mean
            var += diff * diff
        var /= D
        rstd = np.float32(1.0 / math.sqrt(var + eps))
        mu = np.float32(mean)
        for k in range(D):
            out[m, k] = (x[m, k] - mu) * rstd * gamma[k] + beta[k]
    return out


def _add(x, y):
    M, D = x.shape
    out = np.empty((M, D), dtype=np.float32)
    for m in prange(M):
        for k in range(D):
            out[m, k] = x[m, k] + y[m, k]
    return out


def _gated_add(h, s, f):
    """h + s * f: the SLFN's two branches multiplied and added to the residual."""
    M, D = h.shape
    out = np.empty((M, D), dtype=np.float32)
    for m in prange(M):
        for k in range(D):
            out[m, k] = h[m, k] + s[m, k] * f[m, k]
    return out


def _mean_pool(x, offsets):
    """Mean of each sample's token rows: [B, d]."""
    B = offsets.shape[0] - 1
    D = x.shape[1]
    out = np.empty((B, D), dtype=np.float32)
    for b in prange(B):
        start, stop = offsets[b], offsets[b + 1]
        for k in range(D):
            total = np.float32(0.0)
            for t in range(start, stop):
                total += x[t, k]
            out[b, k] = total / np.float32(max(stop - start, 1))
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
            for n in range(N):
                acc[n] += xv * wt[k, n]
        for n in range(N):
            out[m, n] = acc[n] + bias[n]
    return out


def _embed_binary(bits, scale, ids, K):
    """Rows of a 1-bit table: out[t] = scale[ids[t]] * sign bits of row ids[t] (ids already range-checked)."""
    T = ids.shape[0]
    out = np.empty((T, K), dtype=np.float32)
    for t in prange(T):
        row = ids[t]
        s = scale[row]
        for k in range(K):
            bit = (bits[row, k // 64] >> np.uint64(k % 64)) & np.uint64(1)
            out[t, k] = s if bit else -s
    return out


_BODIES = {
    "embed_binary": _embed_binary,
    "pack_rows": _pack_rows,
    "bgemm_int": _bgemm_int,
    "bgemm_affine": _bgemm_affine,
    "bgemm_act_pack": _bgemm_act_pack,
    "attention": _attention,
    "layernorm": _layernorm,
    "add": _add,
    "gated_add": _gated_add,
    "mean_pool": _mean_pool,
    "float_linear": _float_linear,
}

# _activation is a helper called from inside kernels, never in parallel.
_activation = njit(cache=True, inline="always")(_activation)


class KernelSet:
    """One flavour (serial or parallel) of every kernel, as attributes: ks.bgemm_affine(...)."""

    def __init__(self, parallel: bool) -> None:
        self.parallel = parallel
        for name, body in _BODIES.items():
            setattr(self, name, _jit(parallel)(body))


SERIAL = KernelSet(parallel=False)
PARALLEL = KernelSet(parallel=True)
