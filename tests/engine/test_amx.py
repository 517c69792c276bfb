"""The AMX tile kernels (`engine.amx`) against the integer reference and against the popcount kernels they
replace: the same integers, the same float32 epilogues bit for bit, the same codes. Skipped where the CPU or
the kernel does not offer AMX (the popcount kernels' own tests cover every CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from beexformer.engine import amx
from beexformer.engine import kernels as K
from beexformer.engine.packing import pack_weight, sign_pm1

# At module level, as the other engine tests: collected while tests/engine/conftest.py is the `conftest` module
# (inside a test, tests/llm/conftest.py may have taken the name by then).
from conftest import make_model, random_batch

pytestmark = pytest.mark.skipif(not amx.usable(), reason="no AMX tiles on this CPU / kernel")

FLAVOURS = [amx.SERIAL, amx.PARALLEL]
# M not a multiple of 16 (one and two row tiles, an odd tile count), K not a multiple of 64, N not of 32
SHAPES = [(1, 1, 1), (1, 64, 32), (3, 65, 7), (16, 384, 384), (17, 127, 129), (24, 384, 1536), (40, 1541, 131),
          (70, 256, 300)]  # fmt: skip
CODES = [(1, False), (2, True), (2, False), (4, True), (4, False)]


def _offset(bits: int, signed: bool) -> np.float32:
    return np.float32((2**bits - 1) / 2 + 0.5 if signed else 0.5)


def _z2(bits: int, signed: bool) -> int:
    return 2**bits - 1 if signed else 0


def _padded(values: np.ndarray, dtype) -> np.ndarray:
    m, k = values.shape
    out = np.zeros((amx.padded_rows(m), amx.padded_k(k)), dtype=dtype)
    out[:m, :k] = values
    return out


def _weights(rng, n: int, k: int) -> np.ndarray:
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[-1, -1] = 0.0  # sign(0) = +1
    return w


def test_tile_weights_layout():
    """Bit 4 c + i of word r of column tile t is the sign of W[16 t + c, 4 r + i]; padding is +1."""
    rng = np.random.default_rng(0)
    w = sign_pm1(_weights(rng, 37, 70))
    tiles = amx.tile_weights(w)
    assert tiles.shape == (amx.padded_n(37) // 16, amx.padded_k(70) // 4) == (4, 32)
    bits = np.unpackbits(tiles.view(np.uint8), bitorder="little").reshape(4, 32, 16, 4)
    for t, r, c, i in [(0, 0, 0, 0), (1, 3, 5, 2), (2, 17, 4, 1), (2, 17, 5, 1), (3, 31, 15, 3)]:
        n, k = 16 * t + c, 4 * r + i
        assert bits[t, r, c, i] == (1 if n >= 37 or k >= 70 else int(w[n, k] > 0))


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_tile_gemms_are_the_integer_product(ks, shape):
    m, k, n = shape
    rng = np.random.default_rng(m * 1000 + k + n)
    w = _weights(rng, n, k)
    ref_w = sign_pm1(w).astype(np.int64).T
    tiles = amx.tile_weights(sign_pm1(w))
    codes = rng.integers(0, 256, (m, k))
    out = np.full((amx.padded_rows(m), amx.padded_n(n)), -7, dtype=np.int32)
    ks.gemm_u8(_padded(codes, np.uint8), tiles, out)
    assert np.array_equal(out[:m, :n], codes @ ref_w)
    signs = sign_pm1(rng.standard_normal((m, k)))
    ks.gemm_s8(_padded(signs, np.int8), tiles, out)
    assert np.array_equal(out[:m, :n], signs.astype(np.int64) @ ref_w)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("code", CODES, ids=str)
def test_quantize_bytes_are_the_planes_codes(ks, code):
    """The byte codes equal the bit-plane quantizer's codes (itself tested against PyTorch's quantizer),
    boundaries and values a rounding error either side of them included; the padding is 0."""
    bits, signed = code
    rng = np.random.default_rng(bits)
    step, threshold = np.float32(0.37), np.float32(0.13)
    x = (rng.standard_normal((19, 130)) * 2).astype(np.float32)
    x[0, :6] = np.array([0.5, 1.5, -0.5, -1.5, 0.0, 1.0], np.float32) * step + threshold
    x[1, :6] = np.nextafter(x[0, :6], np.float32(np.inf))
    x[2, :6] = np.nextafter(x[0, :6], np.float32(-np.inf))
    codes, sums = ks.quantize_bytes(x, step, threshold, _offset(bits, signed), bits, amx.padded_k(130))
    planes, usum = K.SERIAL.quantize_rows(x, step, threshold, _offset(bits, signed), bits)
    ref = sum(np.unpackbits(planes[:, j].view(np.uint8), axis=1, count=130, bitorder="little").astype(np.int64) << j
              for j in range(bits))  # fmt: skip
    assert codes.shape == (32, 192) and codes.dtype == np.uint8
    assert np.array_equal(codes[:19, :130], ref) and not codes[19:].any() and not codes[:, 130:].any()
    assert np.array_equal(sums, usum)


@pytest.mark.parametrize("ks", FLAVOURS, ids=["serial", "parallel"])
@pytest.mark.parametrize("code", CODES, ids=str)
@pytest.mark.parametrize("act", [K.ACT_GELU, K.ACT_SIGMOID, K.ACT_TANH], ids=["gelu", "sigmoid", "tanh"])
def test_tile_epilogues_equal_the_bitserial_kernels(ks, code, act):
    """planes_affine and planes_act_quant give bit for bit what bgemm_planes_affine / _act_quant give."""
    bits, signed = code
    rng = np.random.default_rng(7 * bits + act)
    m, k, n = 45, 96, 100
    step, out_step, out_thr = np.float32(0.3), np.float32(0.11), np.float32(0.02)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = _weights(rng, n, k)
    alpha = np.abs(w).mean(axis=1).astype(np.float32)
    bias = (0.3 * rng.standard_normal(n)).astype(np.float32)
    corr = _z2(bits, signed) * sign_pm1(w).astype(np.int64).sum(axis=1)
    planes, usum = K.SERIAL.quantize_rows(x, step, np.float32(0.0), _offset(bits, signed), bits)
    ref = K.SERIAL.bgemm_planes_affine(planes, usum, step / 2, pack_weight(w), alpha, corr, bias)
    ref_planes, ref_sums = K.SERIAL.bgemm_planes_act_quant(
        planes, usum, step / 2, pack_weight(w), alpha, corr, bias, act, out_step, out_thr, _offset(bits, True), bits
    )
    codes, _ = ks.quantize_bytes(x, step, np.float32(0.0), _offset(bits, signed), bits, amx.padded_k(k))
    dots = np.empty((codes.shape[0], amx.padded_n(n)), dtype=np.int32)
    ks.gemm_u8(codes, amx.tile_weights(sign_pm1(w)), dots)
    assert np.array_equal(ks.planes_affine(dots, m, step / 2, alpha, corr, bias), ref)
    out, sums = ks.planes_act_quant(
        dots, m, step / 2, alpha, corr, bias, act, out_step, out_thr, _offset(bits, True), bits, amx.padded_k(n)
    )
    assert np.array_equal(sums, ref_sums)
    for j in range(bits):
        plane = np.unpackbits(ref_planes[:, j].view(np.uint8), axis=1, count=n, bitorder="little")
        assert np.array_equal((out[:m, :n] >> j) & 1, plane)
    assert not out[m:].any() and not out[:, n:].any()


MODELS = {
    "w1a4-bert": dict(act_bits=4, ffn="ffn", position="learned", layer_norm_eps=1e-12, d_model=96, n_heads=6),
    "w1a2-ffn-slfn-pre-ln": dict(act_bits=2, ffn="ffn_slfn", norm="pre"),
    "w1a4-slfn": dict(act_bits=4),
    "w1a1-elastic-bert": dict(act_bits=1, act_binarizer="elastic", ffn="ffn", position="learned"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_packed_model_on_tiles_is_bit_identical(name):
    """Whole bit-serial models: the same exit logits with and without tiles, one sentence and a ragged batch
    (the parallel flavour from 256 rows on)."""
    from beexformer.engine.export import packed_tensors
    from beexformer.engine.runtime import PackedModel

    model = make_model(**MODELS[name])
    tensors = packed_tensors(model)
    tiled, plain = (
        PackedModel(model.config, tensors, None, tiles=True),
        PackedModel(model.config, tensors, None, tiles=False),
    )
    assert tiled.tiles and not plain.tiles
    ids, segs = random_batch(24, model.config.vocab_size, model.config.max_len, pairs=True)
    for batch, batch_segs in (([ids[0]], [segs[0]]), (ids, segs)):
        a, b = tiled.run(batch, batch_segs), plain.run(batch, batch_segs)
        assert np.array_equal(a.exit_logits, b.exit_logits)
