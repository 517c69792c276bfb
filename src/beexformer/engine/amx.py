"""Intel AMX tiles for the 1-bit-weight GEMMs: exact int8 products, 16 x 16 x 64 per instruction.

Why: the bit-serial GEMM of k-bit activations (`kernels.bgemm_planes_*`) costs one AND, one VPOPCNTQ and one
add per 64 weights *per code bit*, and at MiniLM's shapes it ran at that ALU bound (docs/engine.md). An AMX
tile multiply (TDPBUSD: uint8 codes x int8 weights, int32 sums) does 16 x 16 x 64 multiply-accumulates in
one instruction, whatever the code width. The weights stay 1 bit each in memory (the L2-resident form): before
a column tile is used, its signs are expanded to +-1 bytes in the VNNI layout the tile unit reads (one
mask-to-bytes per 64 weights), then reused for every row tile of the batch.

Exact: the tile unit sums int8 x uint8 products in int32 (no rounding, no saturation in TDPBUSD/TDPBSSD), so
the product is the integer product of the codes and the signs, the value the popcount kernels compute; the
float epilogues are the popcount kernels' own, operation for operation.

Availability: a CPU with AMX-TILE and AMX-INT8, a Linux kernel that grants the process the tile state
(`arch_prctl(ARCH_REQ_XCOMP_PERM)`), and numba compiling for the host's own features (the tests' AVX2 and
baseline builds set NUMBA_CPU_FEATURES and never compile this). `BEEX_AMX=0` turns it off (A/B timing).
Nothing here is compiled unless `usable()` says yes: numba compiles lazily, on the first call.
"""

from __future__ import annotations

import ctypes
import os
import platform
from functools import cache

import numpy as np
from llvmlite import ir
from numba import config, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from beexformer.engine import kernels as K
from beexformer.engine.jitcache import jit, renamed

ROWS = 16  # rows of a tile (activation rows per A tile, output rows per C tile)
K_TILE = 64  # inputs per A-tile row: 64 bytes
COLS = 16  # output columns of a C tile (int32)

_I8, _I64 = ir.IntType(8), ir.IntType(64)
_PTR = _I8.as_pointer()
_VOID = ir.VoidType()
_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158


@cache
def usable() -> bool:
    """Whether this process may run the AMX kernels (checked, and the tile state requested, once)."""
    if os.environ.get("BEEX_AMX", "1") == "0" or platform.system() != "Linux" or platform.machine() != "x86_64":
        return False
    from beexformer.engine.cpu import host_features

    features = host_features()
    if not (features.get("amx-tile") and features.get("amx-int8")):
        return False
    if config.CPU_NAME or (config.CPU_FEATURES is not None and "+amx-int8" not in config.CPU_FEATURES):
        return False  # numba compiles for another target (the tests' AVX2 / baseline builds)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
    except (OSError, AttributeError):
        return False


def _function(builder, name: str, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _address(context, builder, ty, value, offset):
    """i8* to element `offset` of array `value`."""
    data = context.make_array(ty)(context, builder, value).data
    return builder.bitcast(builder.gep(data, [offset]), _PTR)


def _literal(t) -> bool:
    return isinstance(t, types.IntegerLiteral)


def _imm(t) -> ir.Constant:
    return ir.Constant(_I8, t.literal_value)


@intrinsic
def tile_config(typingctx, cfg):
    """LDTILECFG from a 64-byte configuration."""
    if not (isinstance(cfg, types.Array) and cfg.dtype == types.uint8 and cfg.ndim == 1):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(_I64, 0)
        builder.call(
            _function(builder, "llvm.x86.ldtilecfg", _VOID, [_PTR]),
            [_address(context, builder, sig.args[0], args[0], zero)],
        )
        return context.get_dummy_value()

    return types.void(cfg), codegen


@intrinsic
def tile_release(typingctx):
    """TILERELEASE: the tile state back to its initial (cheap to save) state."""

    def codegen(context, builder, sig, args):
        builder.call(_function(builder, "llvm.x86.tilerelease", _VOID, []), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def tile_zero(typingctx, tile):
    if not _literal(tile):
        return None

    def codegen(context, builder, sig, args):
        builder.call(_function(builder, "llvm.x86.tilezero", _VOID, [_I8]), [_imm(sig.args[0])])
        return context.get_dummy_value()

    return types.void(tile), codegen


@intrinsic
def address(typingctx, array):
    """The address of a C-contiguous array's first element, as an integer: the tile loops below work on
    addresses, so no array (and no reference count) is touched between tile instructions."""
    if not (isinstance(array, types.Array) and array.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, _I64)

    return types.int64(array), codegen


def _make_tile_move(name: str):
    @intrinsic
    def tile_move(typingctx, tile, where, stride):
        """tile <-> memory: 16 rows from address `where`, `stride` bytes apart (TILELOADD / TILESTORED)."""
        if not _literal(tile):
            return None

        def codegen(context, builder, sig, args):
            fn = _function(builder, name, _VOID, [_I8, _PTR, _I64])
            builder.call(fn, [_imm(sig.args[0]), builder.inttoptr(args[1], _PTR), args[2]])
            return context.get_dummy_value()

        return types.void(tile, types.int64, types.int64), codegen

    return tile_move


tile_load = _make_tile_move("llvm.x86.tileloadd64")
tile_store = _make_tile_move("llvm.x86.tilestored64")


def _make_tile_dot(name: str):
    @intrinsic
    def tile_dot(typingctx, c, a, b):
        """C += A . B with int32 sums of four byte products per element (TDPBUSD: A unsigned; TDPBSSD: signed)."""
        if not (_literal(c) and _literal(a) and _literal(b)):
            return None

        def codegen(context, builder, sig, args):
            fn = _function(builder, name, _VOID, [_I8, _I8, _I8])
            builder.call(fn, [_imm(t) for t in sig.args])
            return context.get_dummy_value()

        return types.void(c, a, b), codegen

    return tile_dot


tile_dot_us = _make_tile_dot("llvm.x86.tdpbusd")
tile_dot_ss = _make_tile_dot("llvm.x86.tdpbssd")


@intrinsic
def expand_signs(typingctx, words, out):
    """out[i, j] = +1 where bit j of words[i] is set, else -1 (int8 [n, 64]): one mask-to-bytes per word."""
    if not (
        isinstance(words, types.Array) and words.dtype == types.uint64 and words.ndim == 1 and words.layout == "C"
        and isinstance(out, types.Array) and out.dtype == types.int8 and out.ndim == 2 and out.layout == "C"
    ):  # fmt: skip
        return None

    def codegen(context, builder, sig, args):
        w = context.make_array(sig.args[0])(context, builder, args[0])
        o = context.make_array(sig.args[1])(context, builder, args[1])
        vec = ir.VectorType(_I8, 64)
        plus, minus = ir.Constant(vec, [1] * 64), ir.Constant(vec, [-1] * 64)
        with cgutils.for_range(builder, builder.extract_value(w.shape, 0)) as loop:
            i = loop.index
            mask = builder.bitcast(builder.load(builder.gep(w.data, [i])), ir.VectorType(ir.IntType(1), 64))
            target = builder.bitcast(builder.gep(o.data, [builder.mul(i, ir.Constant(_I64, 64))]), vec.as_pointer())
            builder.store(builder.select(mask, plus, minus), target, align=1)
        return context.get_dummy_value()

    return types.void(words, out), codegen


def _tile_config() -> np.ndarray:
    """Palette 1, eight tiles of 16 rows x 64 bytes (C: 16 x 16 int32; A: 16 rows x 64 codes; B: 16 rows of
    16 columns x 4 inputs)."""
    cfg = np.zeros(64, dtype=np.uint8)
    cfg[0] = 1
    cfg[16:32].view(np.uint16)[:8] = 64
    cfg[48:56] = ROWS
    return cfg


_CONFIG = _tile_config()


def padded_rows(m: int) -> int:
    return (m + ROWS - 1) // ROWS * ROWS


def padded_k(k: int) -> int:
    return (k + K_TILE - 1) // K_TILE * K_TILE


def padded_n(n: int) -> int:
    """Output columns of the int32 product: a multiple of two column tiles (the GEMM expands two at a time)."""
    return (n + 2 * COLS - 1) // (2 * COLS) * (2 * COLS)


def tile_weights(signs: np.ndarray) -> np.ndarray:
    """+-1 weights [N, K] -> the tile-ordered bits uint64 [padded_n(N) / 16, padded_k(K) / 4]: word r of column
    tile t holds, at bit 4 c + i, the sign of W[16 t + c, 4 r + i] (1 for +1): once expanded to bytes, the
    B-tile rows of TDPB*D (16 columns x 4 inputs each). N is padded to `padded_n`, K to `padded_k`, with
    weights +1 (the padded inputs are 0, the padded outputs unused)."""
    n, k = signs.shape
    n_pad, k_pad = padded_n(n), padded_k(k)
    full = np.ones((n_pad, k_pad), dtype=bool)
    full[:n, :k] = signs > 0
    # [NT, 16 columns, K/4 groups, 4] -> [NT, K/4, 16, 4]: each group of 64 bits is one B-tile row
    order = full.reshape(n_pad // COLS, COLS, k_pad // 4, 4).transpose(0, 2, 1, 3)
    packed = np.packbits(np.ascontiguousarray(order).reshape(n_pad // COLS, k_pad // 4, 64), axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").reshape(n_pad // COLS, k_pad // 4).astype(np.uint64, copy=False)


PAIRS_PER_TASK = 8  # column-tile pairs per parallel task (and per tile configuration: LDTILECFG costs ~75 ns)


def _gemm(a, w, out):
    """out[Mp, NT * 16] int32 = a [Mp, Kp] (bytes; Mp a multiple of 16, Kp of 64, padding 0) times the +-1
    weights of `tile_weights` w [NT, Kp / 4] (NT even: `padded_n`).

    Two column tiles are expanded to bytes at a time (the panel, reused by every row tile), and each step of
    the inner loop loads two A tiles and two B tiles for four products into four accumulators (C0..C3): half
    the loads of one accumulator pair, and four independent chains to cover the multiply's latency. The loops
    work on addresses (`address`): no array is touched between tile instructions. Tasks of PAIRS_PER_TASK
    column pairs (prange; each thread configures its own tiles)."""
    Mp, Kp = a.shape
    NT = w.shape[0]
    KT = Kp // K_TILE
    N = out.shape[1]
    a0, o0 = address(a), address(out)
    row_step, out_step = ROWS * Kp, ROWS * 4 * N  # bytes from one row tile to the next
    pairs = NT // 2
    for task in prange((pairs + PAIRS_PER_TASK - 1) // PAIRS_PER_TASK):
        panels = np.empty((2, Kp // 4, 64), dtype=np.int8)
        p0 = address(panels)
        p1 = p0 + Kp * 16
        tile_config(_CONFIG)
        for pair in range(task * PAIRS_PER_TASK, min(pairs, task * PAIRS_PER_TASK + PAIRS_PER_TASK)):
            nt = 2 * pair
            expand_signs(w[nt], panels[0])
            expand_signs(w[nt + 1], panels[1])
            for m0 in range(0, Mp, 2 * ROWS):
                ra = a0 + m0 * Kp
                rc = o0 + 4 * (m0 * N + nt * COLS)
                if m0 + ROWS < Mp:
                    tile_zero(0)
                    tile_zero(1)
                    tile_zero(2)
                    tile_zero(3)
                    for kt in range(KT):
                        tile_load(4, ra + kt * K_TILE, Kp)
                        tile_load(6, p0 + kt * 1024, 64)
                        tile_dot(0, 4, 6)
                        tile_load(5, ra + row_step + kt * K_TILE, Kp)
                        tile_dot(1, 5, 6)
                        tile_load(7, p1 + kt * 1024, 64)
                        tile_dot(2, 4, 7)
                        tile_dot(3, 5, 7)
                    tile_store(0, rc, 4 * N)
                    tile_store(1, rc + out_step, 4 * N)
                    tile_store(2, rc + 4 * COLS, 4 * N)
                    tile_store(3, rc + out_step + 4 * COLS, 4 * N)
                else:
                    tile_zero(0)
                    tile_zero(2)
                    for kt in range(KT):
                        tile_load(4, ra + kt * K_TILE, Kp)
                        tile_load(6, p0 + kt * 1024, 64)
                        tile_dot(0, 4, 6)
                        tile_load(7, p1 + kt * 1024, 64)
                        tile_dot(2, 4, 7)
                    tile_store(0, rc, 4 * N)
                    tile_store(2, rc + 4 * COLS, 4 * N)
        tile_release()


tile_dot = tile_dot_us  # replaced in each copy's globals


# ----------------------------------------------------------------------------------------------------------
# The bit-serial linears (k-bit learned-step codes x 1-bit weights) on tiles: codes as bytes instead of bit
# planes, the same epilogues. With D = sum_k n_k w_k from the tile unit, twice the dot product of (n - z) with
# the signs is dot2 = 2 D - z2 * rowsum (`kernels`' bit-serial section): the same integer, the same float32
# epilogue alpha * ((s / 2) * dot2) + bias.


@jit(inline="always")
def _quantize_row_bytes(xr, step, threshold, offset, top, out):
    """out[k] = clamp(floor((xr[k] - threshold) / step + offset), 0, top) for k < len(xr); returns their sum."""
    total = 0
    for k in range(xr.shape[0]):
        q = min(max(np.floor((xr[k] - threshold) / step + offset), np.float32(0.0)), top)
        out[k] = np.uint8(q)
        total += np.int64(q)
    return total


def _quantize_bytes(x, step, threshold, offset, bits, k_pad):
    """Codes n = clamp(floor((x - threshold) / step + offset), 0, 2^bits - 1) of x [M, K] as uint8
    [padded_rows(M), k_pad] (padding 0), and their sums per row [M]: `kernels.quantize_rows`' float32
    operations, in its order, without fastmath, so the codes are its codes."""
    M = x.shape[0]
    step, threshold, offset = np.float32(step), np.float32(threshold), np.float32(offset)
    top = np.float32((1 << bits) - 1)
    codes = np.zeros(((M + ROWS - 1) // ROWS * ROWS, k_pad), dtype=np.uint8)
    sums = np.empty(M, dtype=np.int64)
    for m in prange(M):
        sums[m] = _quantize_row_bytes(x[m], step, threshold, offset, top, codes[m])
    return codes, sums


@jit(inline="always")
def _planes_epilogue_row(drow, hs, alpha, corr, bias, orow):
    """orow[n] = alpha[n] * (hs * float32(2 D - corr[n])) + bias[n]."""
    for n in range(orow.shape[0]):
        dot2 = np.float32(2 * np.int64(drow[n]) - corr[n])
        orow[n] = alpha[n] * (hs * dot2) + bias[n]


def _planes_affine(dots, M, half_step, alpha, corr, bias):
    """The float output [M, N] of a bit-serial linear from the tile product `dots`."""
    N = alpha.shape[0]
    hs = np.float32(half_step)
    out = np.empty((M, N), dtype=np.float32)
    for m in prange(M):
        _planes_epilogue_row(dots[m], hs, alpha, corr, bias, out[m])
    return out


def _planes_act_quant(dots, M, half_step, alpha, corr, bias, act, out_step, out_threshold, out_offset, out_bits, k_pad):
    """A bit-serial linear whose output feeds another: y -> act(y) -> the next layer's codes (bytes, as
    `quantize_bytes`), as `kernels.bgemm_planes_act_quant` does with planes."""
    N = alpha.shape[0]
    hs = np.float32(half_step)
    step, threshold, offset = np.float32(out_step), np.float32(out_threshold), np.float32(out_offset)
    top = np.float32((1 << out_bits) - 1)
    codes = np.zeros(((M + ROWS - 1) // ROWS * ROWS, k_pad), dtype=np.uint8)
    sums = np.empty(M, dtype=np.int64)
    for m in prange(M):
        y = np.empty(N, dtype=np.float32)
        _planes_epilogue_row(dots[m], hs, alpha, corr, bias, y)
        if act == K.ACT_GELU:
            K._gelu_inplace(y)
        elif act != K.ACT_IDENTITY:
            for i in range(N):
                y[i] = K._activation(y[i], act)
        sums[m] = _quantize_row_bytes(y, step, threshold, offset, top, codes[m])
    return codes, sums


def _compile(fn, parallel: bool, name: str, dot=None):
    """fn compiled in one flavour (serial: prange runs as range), with `tile_dot` bound to `dot` in its globals
    for the GEMM; cached under its own name."""
    scope = dict(globals())
    if dot is not None:
        scope["tile_dot"] = dot
    return jit(nogil=True, parallel=parallel, error_model="numpy")(renamed(fn, name, scope))


class TileKernels:
    """One flavour (serial or parallel) of the AMX kernels, as attributes (as `kernels.KernelSet`)."""

    def __init__(self, parallel: bool) -> None:
        suffix = "parallel" if parallel else "serial"
        self.parallel = parallel
        self.gemm_u8 = _compile(_gemm, parallel, f"gemm_u8_{suffix}", tile_dot_us)  # uint8 codes x +-1
        self.gemm_s8 = _compile(_gemm, parallel, f"gemm_s8_{suffix}", tile_dot_ss)  # +-1 signs x +-1
        self.quantize_bytes = _compile(_quantize_bytes, parallel, f"quantize_bytes_{suffix}")
        self.planes_affine = _compile(_planes_affine, parallel, f"planes_affine_{suffix}")
        self.planes_act_quant = _compile(_planes_act_quant, parallel, f"planes_act_quant_{suffix}")


SERIAL = TileKernels(parallel=False)
PARALLEL = TileKernels(parallel=True)
