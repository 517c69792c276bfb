"""A whole W1A1 block as one compiled call.

At batch size 1 a block is a dozen small kernels of a few microseconds each; calling them one by one from
Python costs as much again in dispatch (argument type checks, boxing of the results). `binary_block` chains
them inside numba instead: one dispatch per block. The body is compiled twice, against the serial and the
parallel kernels (`kernels.SERIAL` / `kernels.PARALLEL`, chosen per batch by `threads.kernels_for`), from the
same source: a copy of the function whose globals name the other flavour.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit

from beexformer.engine import kernels as K

# Resolved at compile time from the function's globals; the parallel copy gets PARALLEL's versions.
layernorm = K.SERIAL.layernorm
pack_rows = K.SERIAL.pack_rows
bgemm_affine = K.SERIAL.bgemm_affine
bgemm_act_pack = K.SERIAL.bgemm_act_pack
attention = K.SERIAL.attention
add = K.SERIAL.add
gated_add = K.SERIAL.gated_add


def _binary_block(
    x, offsets, n_heads, pre_norm, slfn, eps,
    qkv_w, qkv_a, qkv_c, qkv_b, o_w, o_a, o_c, o_b,
    up_w, up_a, up_c, up_b, acts, centres,
    d1_w, d1_a, d1_c, d1_b, d2_w, d2_a, d2_c, d2_b,
    g1, b1, g2, b2, k_model, k_ff,
):  # fmt: skip
    """post-LN: H = LN1(X + O(attn(QKV(X)))), X' = LN2(H + FFN(H)); pre-LN: H = X + O(attn(QKV(LN1 X))),
    X' = H + FFN(LN2 H). FFN: the SLFN s2(sigmoid(s1 .)) * f2(tanh(f1 .)) with s1|f1 fused in `up` and
    (s2, f2) = (d1, d2); or lin2(gelu(lin1 .)) with lin1 = up and lin2 = d1. Every linear is W1A1: inputs are
    packed right where they are produced."""
    zero = np.float32(0.0)
    attn_in = layernorm(x, g1, b1, eps) if pre_norm else x
    xp, xb = pack_rows(attn_in, zero)
    qkv = bgemm_affine(xp, xb, qkv_w, qkv_a, qkv_c, qkv_b, k_model)
    ctx = attention(qkv, offsets, n_heads)
    cp, cb = pack_rows(ctx, zero)
    summed = add(x, bgemm_affine(cp, cb, o_w, o_a, o_c, o_b, k_model))
    h = summed if pre_norm else layernorm(summed, g1, b1, eps)
    ffn_in = layernorm(h, g2, b2, eps) if pre_norm else h
    hp, hb = pack_rows(ffn_in, zero)
    words, betas = bgemm_act_pack(hp, hb, up_w, up_a, up_c, up_b, k_model, acts, centres)
    if slfn:
        s = bgemm_affine(words[0], betas[0], d1_w, d1_a, d1_c, d1_b, k_ff)
        f = bgemm_affine(words[1], betas[1], d2_w, d2_a, d2_c, d2_b, k_ff)
        out = gated_add(h, s, f)
    else:
        out = add(h, bgemm_affine(words[0], betas[0], d1_w, d1_a, d1_c, d1_b, k_ff))
    return out if pre_norm else layernorm(out, g2, b2, eps)


def _flavour(kernels: K.KernelSet, name: str):
    scope = dict(globals())
    for attr in ("layernorm", "pack_rows", "bgemm_affine", "bgemm_act_pack", "attention", "add", "gated_add"):
        scope[attr] = getattr(kernels, attr)
    fn = types.FunctionType(_binary_block.__code__, scope, name, _binary_block.__defaults__)
    fn.__qualname__ = name  # the on-disk cache is keyed by qualified name: one entry per flavour
    fn.__module__ = __name__
    return njit(cache=True, nogil=True)(fn)


binary_block_serial = _flavour(K.SERIAL, "binary_block_serial")
binary_block_parallel = _flavour(K.PARALLEL, "binary_block_parallel")


def binary_block(kernels: K.KernelSet):
    """The fused block compiled against this kernel flavour."""
    return binary_block_parallel if kernels.parallel else binary_block_serial


mean_pool = K.SERIAL.mean_pool
float_linear = K.SERIAL.float_linear


@njit(cache=True, nogil=True)
def exit_head(x, offsets, has_norm, g, b, w1t, b1, w2t, b2):
    """An exit, one call: masked mean-pool of each sample's rows -> (LayerNorm, pre-LN models) -> Linear ->
    ReLU -> Linear. Float32 throughout (the exits are full precision); tiny, so always serial."""
    pooled = mean_pool(x, offsets)
    if has_norm:
        pooled = layernorm(pooled, g, b, np.float32(1e-5))  # nn.LayerNorm's default eps, as in ExitHead
    hidden = float_linear(pooled, w1t, b1)
    for i in range(hidden.shape[0]):
        for j in range(hidden.shape[1]):
            if hidden[i, j] < 0:
                hidden[i, j] = 0.0
    return float_linear(hidden, w2t, b2)
