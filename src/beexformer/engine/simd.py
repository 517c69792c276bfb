"""Register-blocked micro-kernels of the packed GEMMs, written as LLVM IR with explicit vector types.

Why: numba cannot keep vector accumulators in registers across the weight words when the loop is written in
Python (the running sums of `kernels._popcount_tile` go through L1 on every word, and a register-blocked
version with scalar accumulators did not vectorize: docs/engine.md). Here one call computes a tile of
`TILE` = 32 output columns of one activation row: the sums live in four <8 x i64> values for the whole loop
over the weight words (LLVM's mem2reg keeps them in registers), each weight vector is loaded once, and the
epilogue (dot = K - 2 * popcount, then alpha * (beta * dot + c * rowsum) + bias; or the bit-serial one) is
applied to the vectors before anything is stored. So a tile costs one VPOPCNTQ per 8 weight words on
AVX-512 VPOPCNTDQ, and LLVM legalizes the same IR for AVX2 (a PSHUFB nibble table) and baseline x86-64
(bit tricks): `llvm.ctpop` is exact everywhere, the arithmetic is integer until the epilogue, and the
epilogue's float operations are the scalar code's, in its order, without fast-math flags (no contraction).

Every operand must be C-contiguous (checked when the calling kernel is typed) and the caller guarantees
n0 + TILE <= N; the columns past the last full tile go through the scalar kernels.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 8  # 64-bit lanes of one vector value (a zmm register; LLVM splits it where vectors are narrower)
VECTORS = 4  # accumulator vectors per tile
TILE = LANES * VECTORS  # output columns per call
MAX_PLANES = 4  # bit-serial tiles exist for 1 to 4 code bits

_I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
_VI64, _VF32 = ir.VectorType(_I64, LANES), ir.VectorType(_F32, LANES)


def _c_array(ty, dtype, ndim: int) -> bool:
    return isinstance(ty, types.Array) and ty.layout == "C" and ty.dtype == dtype and ty.ndim == ndim


def _splat(builder, value, vec_type):
    """A vector with every lane `value`."""
    first = builder.insert_element(ir.Constant(vec_type, ir.Undefined), value, ir.Constant(_I32, 0))
    mask = ir.Constant(ir.VectorType(_I32, vec_type.count), [0] * vec_type.count)
    return builder.shuffle_vector(first, ir.Constant(vec_type, ir.Undefined), mask)


def _load_vec(builder, base, offset, vec_type):
    """vec_type loaded from base[offset : offset + LANES] (element pointer; unaligned)."""
    return builder.load(builder.bitcast(builder.gep(base, [offset]), vec_type.as_pointer()), align=4)


def _store_vec(builder, value, base, offset) -> None:
    builder.store(value, builder.bitcast(builder.gep(base, [offset]), value.type.as_pointer()), align=4)


def _popcount_sums(context, builder, a_ty, a_val, w_ty, w_val, n0, planes: int):
    """The accumulator vectors of one tile: for plane j (planes = 0: the XNOR kernel, a is one row [KW]),
    sums[j][v] = sum over kw of popcount(a[j, kw] op w[kw, n0 + 8v : n0 + 8v + 8]), op = xor (XNOR kernel)
    or and (bit planes, a is [B, KW])."""
    a = context.make_array(a_ty)(context, builder, a_val)
    w = context.make_array(w_ty)(context, builder, w_val)
    n_words = builder.extract_value(w.shape, 0)
    n_cols = builder.extract_value(w.shape, 1)
    ctpop = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VI64, [_VI64]), "llvm.ctpop.v8i64")
    n_sums = max(planes, 1)
    slots = [[cgutils.alloca_once_value(builder, ir.Constant(_VI64, None)) for _ in range(VECTORS)]
             for _ in range(n_sums)]  # fmt: skip
    with cgutils.for_range(builder, n_words) as loop:
        kw = loop.index
        row = builder.gep(w.data, [builder.add(builder.mul(kw, n_cols), n0)])
        weights = [_load_vec(builder, row, ir.Constant(_I64, LANES * v), _VI64) for v in range(VECTORS)]
        for j in range(n_sums):
            word = builder.load(builder.gep(a.data, [builder.add(builder.mul(ir.Constant(_I64, j), n_words), kw)]))
            act = _splat(builder, word, _VI64)
            for v in range(VECTORS):
                bits = builder.xor(weights[v], act) if planes == 0 else builder.and_(weights[v], act)
                slot = slots[j][v]
                builder.store(builder.add(builder.load(slot), builder.call(ctpop, [bits])), slot)
    sums = []
    for v in range(VECTORS):  # sum_j 2^j sums_j: the code's place values
        total = builder.load(slots[0][v])
        for j in range(1, n_sums):
            total = builder.add(
                total, builder.shl(builder.load(slots[j][v]), _splat(builder, ir.Constant(_I64, j), _VI64))
            )
        sums.append(total)
    return sums


def _data(context, builder, ty, val):
    return context.make_array(ty)(context, builder, val).data


def _float_epilogue(context, builder, sig, args, dots, scale, n0, operands, shift: bool) -> None:
    """out[n0 + i] = alpha[n0 + i] * (scale * dot_i [+ shift[n0 + i]]) + bias[n0 + i] for the tile, float32, one
    rounding per operation as the scalar kernels: `operands` are the argument positions of (alpha, shift,
    bias, out), or of (alpha, bias, out) without a shift."""
    arrays = [_data(context, builder, sig.args[i], args[i]) for i in operands]
    alpha, out = arrays[0], arrays[-1]
    bias = arrays[-2]
    scale_vec = _splat(builder, scale, _VF32)
    for v in range(VECTORS):
        at = builder.add(n0, ir.Constant(_I64, LANES * v))
        y = builder.fmul(scale_vec, builder.sitofp(dots[v], _VF32))
        if shift:
            y = builder.fadd(y, _load_vec(builder, arrays[1], at, _VF32))
        y = builder.fadd(builder.fmul(_load_vec(builder, alpha, at, _VF32), y), _load_vec(builder, bias, at, _VF32))
        _store_vec(builder, y, out, at)


@intrinsic
def xor_tile_int(typingctx, a, w, n0, k, out):
    """out[n0 + i] = K - 2 * sum_kw popcount(a[kw] ^ w[kw, n0 + i]) for i < TILE (int32): a tile of the exact
    integer product sign(A) @ sign(W)^T."""
    if not (_c_array(a, types.uint64, 1) and _c_array(w, types.uint64, 2) and _c_array(out, types.int32, 1)):
        return None

    def codegen(context, builder, sig, args):
        sums = _popcount_sums(context, builder, sig.args[0], args[0], sig.args[1], args[1], args[2], planes=0)
        data = _data(context, builder, sig.args[4], args[4])
        kvec = _splat(builder, args[3], _VI64)
        for v in range(VECTORS):
            dot = builder.sub(kvec, builder.shl(sums[v], _splat(builder, ir.Constant(_I64, 1), _VI64)))
            _store_vec(
                builder,
                builder.trunc(dot, ir.VectorType(_I32, LANES)),
                data,
                builder.add(args[2], ir.Constant(_I64, LANES * v)),
            )
        return context.get_dummy_value()

    return types.void(a, w, types.int64, types.int64, out), codegen


@intrinsic
def xor_tile_affine(typingctx, a, w, n0, k, beta, alpha, crs, bias, out):
    """out[n0 + i] = alpha[n0 + i] * (beta * dot_i + crs[n0 + i]) + bias[n0 + i], dot_i = K - 2 * popcount sum
    (float32, the scalar kernel's order): a tile of `kernels.bgemm_affine` for one row."""
    f32 = (alpha, crs, bias, out)
    if not (
        _c_array(a, types.uint64, 1)
        and _c_array(w, types.uint64, 2)
        and all(_c_array(x, types.float32, 1) for x in f32)
    ):
        return None

    def codegen(context, builder, sig, args):
        sums = _popcount_sums(context, builder, sig.args[0], args[0], sig.args[1], args[1], args[2], planes=0)
        kvec = _splat(builder, args[3], _VI64)
        one = _splat(builder, ir.Constant(_I64, 1), _VI64)
        dots = [builder.sub(kvec, builder.shl(s, one)) for s in sums]
        _float_epilogue(context, builder, sig, args, dots, args[4], args[2], (5, 6, 7, 8), shift=True)
        return context.get_dummy_value()

    return types.void(a, w, types.int64, types.int64, types.float32, alpha, crs, bias, out), codegen


def _plane_dots(context, builder, sig, args, planes: int):
    """dot2 = 4 * sum_j 2^j popcount(plane_j & W) - 2 sum(n) - z2 rowsum: twice the integer dot product."""
    sums = _popcount_sums(context, builder, sig.args[0], args[0], sig.args[1], args[1], args[2], planes=planes)
    corr = _data(context, builder, sig.args[4], args[4])
    usum2 = _splat(builder, args[3], _VI64)
    two = _splat(builder, ir.Constant(_I64, 2), _VI64)
    dots = []
    for v in range(VECTORS):
        at = builder.add(args[2], ir.Constant(_I64, LANES * v))
        dots.append(builder.sub(builder.sub(builder.shl(sums[v], two), usum2), _load_vec(builder, corr, at, _VI64)))
    return dots


def _make_plane_tiles(planes: int):
    """The bit-serial tiles for `planes` code bits (a compile-time constant, so the planes are unrolled)."""

    @intrinsic
    def plane_tile_int(typingctx, a, w, n0, usum2, corr, out):
        """out[n0 + i] = twice the integer dot product of the codes (minus z) with sign(W) column n0 + i."""
        if not (_c_array(a, types.uint64, 2) and _c_array(w, types.uint64, 2) and _c_array(corr, types.int64, 1)
                and _c_array(out, types.int32, 1)):  # fmt: skip
            return None

        def codegen(context, builder, sig, args):
            dots = _plane_dots(context, builder, sig, args, planes)
            data = _data(context, builder, sig.args[5], args[5])
            for v in range(VECTORS):
                at = builder.add(args[2], ir.Constant(_I64, LANES * v))
                _store_vec(builder, builder.trunc(dots[v], ir.VectorType(_I32, LANES)), data, at)
            return context.get_dummy_value()

        return types.void(a, w, types.int64, types.int64, corr, out), codegen

    @intrinsic
    def plane_tile_affine(typingctx, a, w, n0, usum2, corr, half_step, alpha, bias, out):
        """out[n0 + i] = alpha[n0 + i] * (half_step * dot2_i) + bias[n0 + i] (float32): `bgemm_planes_affine`'s
        epilogue."""
        f32 = (alpha, bias, out)
        if not (_c_array(a, types.uint64, 2) and _c_array(w, types.uint64, 2) and _c_array(corr, types.int64, 1)
                and all(_c_array(x, types.float32, 1) for x in f32)):  # fmt: skip
            return None

        def codegen(context, builder, sig, args):
            dots = _plane_dots(context, builder, sig, args, planes)
            _float_epilogue(context, builder, sig, args, dots, args[5], args[2], (6, 7, 8), shift=False)
            return context.get_dummy_value()

        return types.void(a, w, types.int64, types.int64, corr, types.float32, alpha, bias, out), codegen

    return plane_tile_int, plane_tile_affine


plane1_int, plane1_affine = _make_plane_tiles(1)
plane2_int, plane2_affine = _make_plane_tiles(2)
plane3_int, plane3_affine = _make_plane_tiles(3)
plane4_int, plane4_affine = _make_plane_tiles(4)


# ----------------------------------------------------------------------------------------------------------
# W1A32: float activations times +-1 weights, from the bits. With P = the sum of x over the inputs whose
# weight is +1 and S = the sum of all x, the dot product is 2 P - S, so a tile needs one masked add per 16
# products (the weight bits are the mask) and reads 1 bit per weight instead of a float32: the unpacked
# weights of a MiniLM block are 7 MB (memory-bound at batch 1), their bits 0.2 MB.

SIGN_COLUMNS = 64  # output columns per tile: one 64-bit word of signs per input
FLOAT_LANES = 16  # float32 lanes of one vector value
_VF16 = ir.VectorType(_F32, FLOAT_LANES)


def _make_sign_tile(rows: int):
    @intrinsic
    def sign_tile(typingctx, x, m0, signs, nw, totals, alpha, bias, out):
        """out[m0 + r, 64 nw + c] = alpha[.] * (2 P - totals[m0 + r]) + bias[.] for r < rows, c < 64, where
        P = sum over k of x[m0 + r, k] where bit c of signs[k, nw] is set (float32, sums in k order)."""
        if not (_c_array(x, types.float32, 2) and _c_array(signs, types.uint64, 2) and _c_array(out, types.float32, 2)
                and all(_c_array(a, types.float32, 1) for a in (totals, alpha, bias))):  # fmt: skip
            return None

        def codegen(context, builder, sig, args):
            x_arr = context.make_array(sig.args[0])(context, builder, args[0])
            s_arr = context.make_array(sig.args[2])(context, builder, args[2])
            o_arr = context.make_array(sig.args[7])(context, builder, args[7])
            totals, alpha, bias = (_data(context, builder, sig.args[i], args[i]) for i in (4, 5, 6))
            m0, nw = args[1], args[3]
            n_k = builder.extract_value(x_arr.shape, 1)
            n_words = builder.extract_value(s_arr.shape, 1)
            n_cols = builder.extract_value(o_arr.shape, 1)
            vectors = SIGN_COLUMNS // FLOAT_LANES
            zero = ir.Constant(_VF16, None)
            slots = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)] for _ in range(rows)]
            row_starts = [builder.mul(builder.add(m0, ir.Constant(_I64, r)), n_k) for r in range(rows)]
            with cgutils.for_range(builder, n_k) as loop:
                k = loop.index
                word = builder.load(builder.gep(s_arr.data, [builder.add(builder.mul(k, n_words), nw)]))
                bits = builder.bitcast(word, ir.VectorType(ir.IntType(1), SIGN_COLUMNS))
                lane_sets = [list(range(FLOAT_LANES * v, FLOAT_LANES * (v + 1))) for v in range(vectors)]
                undefined = ir.Constant(bits.type, ir.Undefined)
                masks = [
                    builder.shuffle_vector(bits, undefined, ir.Constant(ir.VectorType(_I32, FLOAT_LANES), lanes))
                    for lanes in lane_sets
                ]
                for r in range(rows):
                    xv = _splat(builder, builder.load(builder.gep(x_arr.data, [builder.add(row_starts[r], k)])), _VF16)
                    for v in range(vectors):
                        acc = builder.load(slots[r][v])
                        builder.store(builder.select(masks[v], builder.fadd(acc, xv), acc), slots[r][v])
            two = _splat(builder, ir.Constant(_F32, 2.0), _VF16)
            col0 = builder.mul(nw, ir.Constant(_I64, SIGN_COLUMNS))
            for r in range(rows):
                row = builder.add(m0, ir.Constant(_I64, r))
                total = _splat(builder, builder.load(builder.gep(totals, [row])), _VF16)
                out_row = builder.mul(row, n_cols)
                for v in range(vectors):
                    col = builder.add(col0, ir.Constant(_I64, FLOAT_LANES * v))
                    dot = builder.fsub(builder.fmul(two, builder.load(slots[r][v])), total)
                    y = builder.fmul(_load_vec(builder, alpha, col, _VF16), dot)
                    y = builder.fadd(y, _load_vec(builder, bias, col, _VF16))
                    _store_vec(builder, y, o_arr.data, builder.add(out_row, col))
            return context.get_dummy_value()

        return types.void(x, types.int64, signs, types.int64, totals, alpha, bias, out), codegen

    return sign_tile


SIGN_ROWS = 4  # rows per tile (16 accumulator vectors)
sign_tile1, sign_tile2, sign_tile3, sign_tile4 = (_make_sign_tile(r) for r in range(1, SIGN_ROWS + 1))


# ----------------------------------------------------------------------------------------------------------
# k-bit activation codes, written as bit planes: 16 inputs per vector, each plane's 16 bits taken from a
# vector compare as a mask (numba's loops for this cost about as much as the bit-serial GEMM they feed).


def _make_quantize_words(planes: int):
    @intrinsic
    def quantize_words(typingctx, x, step, threshold, offset, out):
        """For each full word kw < len(x) // 64: codes n = clamp(floor((x - threshold) / step + offset), 0,
        2^B - 1) of x[64 kw : 64 kw + 64], bit j of each code into out[j, kw]; returns the sum of the codes.
        float32 operations in `quantizers.quantize_codes`' order, no fast-math flags: the IEEE results
        PyTorch's quantizer computes, so the codes are its codes."""
        if not (_c_array(x, types.float32, 1) and _c_array(out, types.uint64, 2)):
            return None
        if not all(t == types.float32 for t in (step, threshold, offset)):
            return None

        def codegen(context, builder, sig, args):
            x_arr = context.make_array(sig.args[0])(context, builder, args[0])
            out_arr = context.make_array(sig.args[4])(context, builder, args[4])
            n_words_out = builder.extract_value(out_arr.shape, 1)
            full = builder.sdiv(builder.extract_value(x_arr.shape, 0), ir.Constant(_I64, 64))
            vi32 = ir.VectorType(_I32, FLOAT_LANES)
            step_v, thr_v, off_v = (_splat(builder, args[i], _VF16) for i in (1, 2, 3))
            top = _splat(builder, ir.Constant(_F32, float((1 << planes) - 1)), _VF16)
            zero_f = ir.Constant(_VF16, None)
            module = builder.module
            vf2 = ir.FunctionType(_VF16, [_VF16, _VF16])
            floor = cgutils.get_or_insert_function(module, ir.FunctionType(_VF16, [_VF16]), "llvm.floor.v16f32")
            maxnum = cgutils.get_or_insert_function(module, vf2, "llvm.maxnum.v16f32")
            minnum = cgutils.get_or_insert_function(module, vf2, "llvm.minnum.v16f32")
            reduce_add = cgutils.get_or_insert_function(
                module, ir.FunctionType(_I32, [vi32]), "llvm.vector.reduce.add.v16i32"
            )
            sums = cgutils.alloca_once_value(builder, ir.Constant(vi32, None))
            with cgutils.for_range(builder, full) as loop:
                kw = loop.index
                words = [ir.Constant(_I64, 0)] * planes
                for v in range(64 // FLOAT_LANES):
                    at = builder.add(builder.mul(kw, ir.Constant(_I64, 64)), ir.Constant(_I64, FLOAT_LANES * v))
                    u = builder.fadd(
                        builder.fdiv(builder.fsub(_load_vec(builder, x_arr.data, at, _VF16), thr_v), step_v), off_v
                    )
                    level = builder.call(minnum, [builder.call(maxnum, [builder.call(floor, [u]), zero_f]), top])
                    codes = builder.fptoui(level, vi32)
                    builder.store(builder.add(builder.load(sums), codes), sums)
                    for j in range(planes):
                        bit = builder.and_(codes, _splat(builder, ir.Constant(_I32, 1 << j), vi32))
                        mask = builder.icmp_unsigned("!=", bit, ir.Constant(vi32, None))
                        chunk = builder.zext(builder.bitcast(mask, ir.IntType(FLOAT_LANES)), _I64)
                        words[j] = builder.or_(words[j], builder.shl(chunk, ir.Constant(_I64, FLOAT_LANES * v)))
                for j in range(planes):
                    index = builder.add(builder.mul(ir.Constant(_I64, j), n_words_out), kw)
                    builder.store(words[j], builder.gep(out_arr.data, [index]))
            return builder.sext(builder.call(reduce_add, [builder.load(sums)]), _I64)

        return types.int64(x, types.float32, types.float32, types.float32, out), codegen

    return quantize_words


quantize_words1, quantize_words2, quantize_words3, quantize_words4 = (
    _make_quantize_words(b) for b in range(1, MAX_PLANES + 1)
)
