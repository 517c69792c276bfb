"""A whole quantized block (W1A1 mean-sign, or bit-serial W1A1/W1A2/W1A4) as one compiled call.

At batch size 1 a block is a dozen small kernels of a few microseconds each; calling them one by one from
Python costs as much again in dispatch (argument type checks, boxing of the results). `binary_block` chains
them inside numba instead: one dispatch per block. The body is compiled twice, against the serial and the
parallel kernels (`kernels.SERIAL` / `kernels.PARALLEL`, chosen per batch by `threads.kernels_for`), from the
same source: a copy of the function whose globals name the other flavour.
"""

from __future__ import annotations

import numpy as np

from beexformer.engine import amx
from beexformer.engine import kernels as K
from beexformer.engine.jitcache import jit, renamed

# Resolved at compile time from the function's globals; the parallel copy gets PARALLEL's versions.
layernorm = K.SERIAL.layernorm
pack_rows = K.SERIAL.pack_rows
bgemm_affine = K.SERIAL.bgemm_affine
bgemm_act_pack = K.SERIAL.bgemm_act_pack
attention = K.SERIAL.attention
add = K.SERIAL.add
gated_add = K.SERIAL.gated_add
quantize_rows = K.SERIAL.quantize_rows
embed_binary = K.SERIAL.embed_binary
gelu_rows = K.SERIAL.gelu_rows
without_channels, add_channels = K.SERIAL.without_channels, K.SERIAL.add_channels
bgemm_planes_affine = K.SERIAL.bgemm_planes_affine
bgemm_planes_act_quant = K.SERIAL.bgemm_planes_act_quant
# the AMX flavours' kernels (`amx.TileKernels`), resolved the same way
gemm_u8, quantize_bytes = amx.SERIAL.gemm_u8, amx.SERIAL.quantize_bytes
planes_affine, planes_act_quant = amx.SERIAL.planes_affine, amx.SERIAL.planes_act_quant
_TILE_KERNEL_NAMES = ("gemm_u8", "quantize_bytes", "planes_affine", "planes_act_quant")
_KERNEL_NAMES = ("layernorm", "pack_rows", "bgemm_affine", "bgemm_act_pack", "attention", "add", "gated_add",
                 "quantize_rows", "bgemm_planes_affine", "bgemm_planes_act_quant", "embed_binary", "gelu_rows",
                 "without_channels", "add_channels")  # fmt: skip

# ffn kinds of the bit-serial block
FFN_SLFN, FFN_PLAIN, FFN_PLAIN_WITH_SLFN = 0, 1, 2


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


# A bit-serial linear is a tuple (bits [KW, N], alpha [N], corr [N] int64, bias [N], step, threshold, offset,
# channels [C] int64, signed_alpha [C, N], zero_level): its weights, the epilogue's constants (corr = z2 *
# rowsum), its input quantizer (offset = z + 1/2), and the input channels it keeps at full precision (C = 0:
# none; `quantizers`), with alpha * sign(W) of their columns and the level a zeroed input takes.


def _apply_act(h, act):
    """act(h) elementwise (the unfused FFN's hidden layer)."""
    if act == K.ACT_GELU:
        return gelu_rows(h)
    out = h.copy()
    for m in range(h.shape[0]):
        for j in range(h.shape[1]):
            out[m, j] = K._activation(h[m, j], act)
    return out


def _qlinear(x, lin, bits):
    """y = lin(quantize(x)): the input's code planes, then the bit-serial GEMM with the affine epilogue; outlier
    channels go around the codes (`add_channels`)."""
    w, alpha, corr, bias, step, threshold, offset, channels, signed_alpha, zero_level = lin
    planes, sums = quantize_rows(without_channels(x, channels), step, threshold, offset, bits)
    y = bgemm_planes_affine(planes, sums, step * np.float32(0.5), w, alpha, corr, bias)
    add_channels(y, x, channels, signed_alpha, zero_level)
    return y


def _qlinear_act_qlinear(x, first, act, second, bits):
    """second(act(first(x))), the activation and second's input quantizer fused into first's epilogue: the
    hidden layer exists only as code planes. With outlier channels, unfused: they need the float values."""
    if first[7].shape[0] or second[7].shape[0]:
        return qlinear(apply_act(qlinear(x, first, bits), act), second, bits)
    w, alpha, corr, bias, step, threshold, offset = first[:7]
    w2, alpha2, corr2, bias2, step2, threshold2, offset2 = second[:7]
    planes, sums = quantize_rows(x, step, threshold, offset, bits)
    hidden, hsums = bgemm_planes_act_quant(
        planes, sums, step * np.float32(0.5), w, alpha, corr, bias, act, step2, threshold2, offset2, bits
    )
    return bgemm_planes_affine(hidden, hsums, step2 * np.float32(0.5), w2, alpha2, corr2, bias2)


def _qlinear_amx(x, lin, bits):
    """`_qlinear` on AMX tiles (`amx`): the codes as bytes, the weights as `amx.tile_weights`."""
    w, alpha, corr, bias, step, threshold, offset, channels, signed_alpha, zero_level = lin
    codes, _ = quantize_bytes(without_channels(x, channels), step, threshold, offset, bits, 4 * w.shape[1])
    dots = np.empty((codes.shape[0], 16 * w.shape[0]), dtype=np.int32)
    gemm_u8(codes, w, dots)
    y = planes_affine(dots, x.shape[0], step * np.float32(0.5), alpha, corr, bias)
    add_channels(y, x, channels, signed_alpha, zero_level)
    return y


def _qlinear_act_qlinear_amx(x, first, act, second, bits):
    """`_qlinear_act_qlinear` on AMX tiles: the hidden layer exists only as byte codes."""
    if first[7].shape[0] or second[7].shape[0]:
        return qlinear(apply_act(qlinear(x, first, bits), act), second, bits)
    w, alpha, corr, bias, step, threshold, offset = first[:7]
    w2, alpha2, corr2, bias2, step2, threshold2, offset2 = second[:7]
    codes, _ = quantize_bytes(x, step, threshold, offset, bits, 4 * w.shape[1])
    dots = np.empty((codes.shape[0], 16 * w.shape[0]), dtype=np.int32)
    gemm_u8(codes, w, dots)
    hidden, _ = planes_act_quant(
        dots, x.shape[0], step * np.float32(0.5), alpha, corr, bias, act, step2, threshold2, offset2, bits,
        4 * w2.shape[1],
    )  # fmt: skip
    dots2 = np.empty((hidden.shape[0], 16 * w2.shape[0]), dtype=np.int32)
    gemm_u8(hidden, w2, dots2)
    return planes_affine(dots2, x.shape[0], step2 * np.float32(0.5), alpha2, corr2, bias2)


# Replaced in each flavour's globals by its compiled copies (`_flavours`).
qlinear, qlinear_act_qlinear, apply_act = _qlinear, _qlinear_act_qlinear, _apply_act


def _planes_block(
    x, offsets, n_heads, pre_norm, ffn_kind, eps, bits,
    q, k, v, o, lin1, lin2, s1, s2, f1, f2, gate, g1, b1, g2, b2,
):  # fmt: skip
    """The block of `_binary_block` with every linear bit-serial on its input's learned k-bit codes
    (`beexformer.quantizers`); ffn_kind: the SLFN, BERT's FFN lin2(gelu(lin1 .)), or that FFN plus
    gate * SLFN (layers.slfn.FeedForwardWithSLFN)."""
    attn_in = layernorm(x, g1, b1, eps) if pre_norm else x
    qkv = np.concatenate((qlinear(attn_in, q, bits), qlinear(attn_in, k, bits), qlinear(attn_in, v, bits)), axis=1)
    ctx = attention(qkv, offsets, n_heads)
    summed = add(x, qlinear(ctx, o, bits))
    h = summed if pre_norm else layernorm(summed, g1, b1, eps)
    ffn_in = layernorm(h, g2, b2, eps) if pre_norm else h
    if ffn_kind == FFN_SLFN:
        s = qlinear_act_qlinear(ffn_in, s1, K.ACT_SIGMOID, s2, bits)
        f = qlinear_act_qlinear(ffn_in, f1, K.ACT_TANH, f2, bits)
        out = gated_add(h, s, f)
    else:
        delta = qlinear_act_qlinear(ffn_in, lin1, K.ACT_GELU, lin2, bits)
        if ffn_kind == FFN_PLAIN_WITH_SLFN:
            s = qlinear_act_qlinear(ffn_in, s1, K.ACT_SIGMOID, s2, bits)
            f = qlinear_act_qlinear(ffn_in, f1, K.ACT_TANH, f2, bits)
            for m in range(delta.shape[0]):  # ffn + gate * (s * f), in PyTorch's order
                for j in range(delta.shape[1]):
                    delta[m, j] = delta[m, j] + gate[j] * (s[m, j] * f[m, j])
        out = add(h, delta)
    return out if pre_norm else layernorm(out, g2, b2, eps)


def _embed(
    tok_bits, tok_scale, tok_table, binary, tok_dim, ids, pos_table, pos_ids, concat, seg_table, seg_ids, has_seg,
    gamma, beta, eps,
):  # fmt: skip
    """X0 = LayerNorm(combine(token rows, position rows) + segment rows), one call (it was eight numpy and numba
    calls): the same float32 operations in the same order as the PyTorch embedding. The token rows come from
    the 1-bit table (`binary`) or the float one; absent parts are passed as empty placeholders."""
    tok = embed_binary(tok_bits, tok_scale, ids, tok_dim) if binary else tok_table[ids]
    pos = pos_table[pos_ids]
    x = np.concatenate((tok, pos), axis=1) if concat else tok + pos
    if has_seg:
        x = x + seg_table[seg_ids]
    return layernorm(x, gamma, beta, eps)


def _copy(fn, scope: dict, name: str):
    """fn compiled with `scope` as its globals, cached under its own name (one cache entry per flavour)."""
    return jit(nogil=True)(renamed(fn, name, scope))


def _flavours(kernels: K.KernelSet, suffix: str, tiles: bool = False):
    """The fused blocks compiled against one kernel flavour (the helpers they call too); with `tiles`, the
    bit-serial linears run on AMX (`amx`)."""
    scope = dict(globals())
    for attr in _KERNEL_NAMES:
        scope[attr] = getattr(kernels, attr)
    tile_kernels = amx.PARALLEL if kernels.parallel else amx.SERIAL
    for attr in _TILE_KERNEL_NAMES:
        scope[attr] = getattr(tile_kernels, attr)
    qlinear_fn, act_fn = (_qlinear_amx, _qlinear_act_qlinear_amx) if tiles else (_qlinear, _qlinear_act_qlinear)
    scope["apply_act"] = _copy(_apply_act, scope, f"apply_act_{suffix}")
    scope["qlinear"] = _copy(qlinear_fn, scope, f"qlinear_{suffix}")
    scope["qlinear_act_qlinear"] = _copy(act_fn, scope, f"qlinear_act_qlinear_{suffix}")
    return (
        _copy(_binary_block, scope, f"binary_block_{suffix}"),
        _copy(_planes_block, scope, f"planes_block_{suffix}"),
        _copy(_embed, scope, f"embed_{suffix}"),
    )


binary_block_serial, planes_block_serial, embed_serial = _flavours(K.SERIAL, "serial")
binary_block_parallel, planes_block_parallel, embed_parallel = _flavours(K.PARALLEL, "parallel")
# on AMX tiles: compiled only if called, which happens only where amx.usable()
_, planes_block_amx_serial, _ = _flavours(K.SERIAL, "amx_serial", tiles=True)
_, planes_block_amx_parallel, _ = _flavours(K.PARALLEL, "amx_parallel", tiles=True)


def binary_block(kernels: K.KernelSet):
    """The fused mean-sign W1A1 block compiled against this kernel flavour."""
    return binary_block_parallel if kernels.parallel else binary_block_serial


def planes_block(kernels: K.KernelSet, tiles: bool = False):
    """The fused bit-serial block compiled against this kernel flavour, its linears on AMX tiles or not."""
    if tiles:
        return planes_block_amx_parallel if kernels.parallel else planes_block_amx_serial
    return planes_block_parallel if kernels.parallel else planes_block_serial


def embed(kernels: K.KernelSet):
    """The fused embedding (lookup, positions, segments, LayerNorm) compiled against this kernel flavour."""
    return embed_parallel if kernels.parallel else embed_serial


mean_pool = K.SERIAL.mean_pool
float_linear = K.SERIAL.float_linear


@jit(nogil=True)
def exit_head(x, offsets, cls, has_norm, g, b, w1t, b1, w2t, b2):
    """An exit, one call: masked mean-pool of each sample's rows (or its first, [CLS], row) -> (LayerNorm,
    pre-LN models) -> Linear -> ReLU -> Linear. Float32 throughout (the exits are full precision); tiny, so
    always serial."""
    pooled = np.ascontiguousarray(x[offsets[:-1]]) if cls else mean_pool(x, offsets)
    if has_norm:
        pooled = layernorm(pooled, g, b, np.float32(1e-5))  # nn.LayerNorm's default eps, as in ExitHead
    hidden = float_linear(pooled, w1t, b1)
    for i in range(hidden.shape[0]):
        for j in range(hidden.shape[1]):
            if hidden[i, j] < 0:
                hidden[i, j] = 0.0
    return float_linear(hidden, w2t, b2)
