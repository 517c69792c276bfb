"""The packed 1-bit runtime: numpy + numba only (torch is never imported on this path).

`PackedModel.load(path)` reads and validates a packed file (`format`), prepares the kernels' operands once
(q/k/v fused into one GEMM, the SLFN's s1/f1 into another, the rowsum correction of centred inputs), and
runs batches of token ids as a *ragged* batch: the token rows of all samples are stacked ([n_tokens, d],
offsets per sample), so padding is never computed, and early exit removes a sample's rows from the stack.

W1A1 layers (weight_bits=1, act_bits=1) run on the XNOR-popcount kernels with fused epilogues; activations
stay packed between binary layers. W1A32 layers (weight_bits=1, act_bits=32) multiply float activations by
the signs straight from the bits (`kernels.sign_gemm`: alpha * (2 P - S), P the sum of the inputs under +1
weights, S of all), faster than numpy's BLAS on the weights unpacked to floats at batch 1 (docs/engine.md).
Float models run BLAS. Attention scores, softmax, LayerNorm and the exit heads are float32.

Exit decisions come from `beexformer.exits` (numpy), the same code the PyTorch model calls, applied the same
way as `BEExformer.early_exit`: after block c, every sample still in the batch whose rule fires leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beexformer.config import BEExformerConfig
from beexformer.engine import amx
from beexformer.engine import blocks as B
from beexformer.engine import kernels as K
from beexformer.engine.blocks import binary_block, embed, exit_head, planes_block
from beexformer.engine.format import act_mode, block_linears, block_names, read_packed
from beexformer.engine.packing import pack_signs, unpack_signs, unpack_weight
from beexformer.engine.text import PackedTokenizer
from beexformer.engine.threads import kernels_for
from beexformer.errors import ConfigError, DataError
from beexformer.exits import ExitRule, ExitTracker, Prediction, predictions_from_logits
from beexformer.positions import sinusoidal_table

_SIGMOID_TANH = np.array([K.ACT_SIGMOID, K.ACT_TANH], dtype=np.int64)
_GELU = np.array([K.ACT_GELU], dtype=np.int64)
# placeholders for the parts a model's embedding does not have (the fused call takes every argument)
_NO_BITS, _NO_FLOATS = np.zeros((0, 1), dtype=np.uint64), np.zeros(0, dtype=np.float32)
_NO_TABLE, _NO_IDS = np.zeros((0, 1), dtype=np.float32), np.zeros(0, dtype=np.int64)


@dataclass
class _Binary:
    """A W1A1 linear: packed weights and the epilogue's per-output constants."""

    bits: np.ndarray  # uint64 [KW, N]
    alpha: np.ndarray  # float32 [N]
    crs: np.ndarray  # float32 [N]: centre * rowsum(sign W), the correction for centred inputs
    bias: np.ndarray  # float32 [N]
    k: int


@dataclass
class _Planes:
    """A bit-serial linear (1-bit weights, k-bit learned-step input codes), as the tuple the fused block takes:
    (bits [KW, N], alpha [N], corr [N] = z2 * rowsum(sign W) int64, bias [N], step, threshold, offset = z + 1/2,
    channels [C] int64, signed_alpha [C, N], zero_level): the last three for the input channels kept at full
    precision (`blocks`; C = 0 without)."""

    args: tuple


@dataclass
class _Dense:
    """A float (or W1A32: unpacked alpha * sign W) linear: y = x @ wt + bias."""

    wt: np.ndarray  # float32 [K, N], C-contiguous
    bias: np.ndarray  # float32 [N]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.wt
        y += self.bias
        return y


@dataclass
class _SignLinear:
    """A W1A32 linear (float activations, +-1 weights): y = x @ (alpha * sign W)^T + bias computed from the
    bits (`kernels.sign_gemm`), never unpacked to floats."""

    signs: np.ndarray  # uint64 [K, ceil(N / 64)]: the signs packed along the outputs
    alpha: np.ndarray  # float32 [N]
    bias: np.ndarray  # float32 [N]

    @classmethod
    def from_parts(cls, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> _SignLinear:
        """From (+-1 weights [N_i, K], alpha [N_i], bias [N_i]) of linears that read the same input (q, k, v
        stacked along N: one call)."""
        signs = np.concatenate([w for w, _, _ in parts])
        return cls(
            pack_signs(np.ascontiguousarray(signs.T)),
            np.ascontiguousarray(np.concatenate([a for _, a, _ in parts]), dtype=np.float32),
            np.ascontiguousarray(np.concatenate([b for _, _, b in parts]), dtype=np.float32),
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return kernels_for(len(x)).sign_gemm(x, self.signs, self.alpha, self.bias)


def _concat_binary(parts: list[_Binary]) -> _Binary:
    return _Binary(
        np.ascontiguousarray(np.concatenate([p.bits for p in parts], axis=1)),
        np.concatenate([p.alpha for p in parts]),
        np.concatenate([p.crs for p in parts]),
        np.concatenate([p.bias for p in parts]),
        parts[0].k,
    )


def _concat_dense(parts: list[_Dense]) -> _Dense:
    return _Dense(
        np.ascontiguousarray(np.concatenate([p.wt for p in parts], axis=1)),
        np.concatenate([p.bias for p in parts]),
    )


def _zero_level(step: np.float32, threshold: np.float32, offset: np.float32, bits: int, z2: int) -> np.float32:
    """The level s * (n - z) an input of 0 gets: what an outlier channel, zeroed before the codes, contributes
    to the integer product. The code n comes from the kernel that quantizes every input (`quantize_rows`)."""
    _, codes = K.SERIAL.quantize_rows(np.zeros((1, 1), dtype=np.float32), step, threshold, offset, bits)
    return np.float32(step * (np.float32(codes[0]) - np.float32(z2 / 2)))


class PackedModel:
    """A loaded packed model. `run` takes token ids; `predict` takes text."""

    def __init__(
        self,
        config: BEExformerConfig,
        tensors: dict[str, np.ndarray],
        tokenizer: PackedTokenizer | None,
        task_info: dict | None = None,
        tiles: bool | None = None,
    ):
        """`tiles`: run the bit-serial linears on AMX (`amx`); None: wherever this process can."""
        c = self.config = config
        self.task_info = dict(task_info or {})
        # Texts are truncated as at training time (task.json's max_len), never beyond the position table.
        self.max_len = min(int(self.task_info.get("max_len") or config.max_len), config.max_len)
        if c.weight_bits == 32 and c.act_bits != 32:
            raise ConfigError(f"float weights with {c.act_bits}-bit activations are not a supported combination")
        self.tokenizer = tokenizer
        self.mode = act_mode(c)  # "float" (W1A32 or float), "sign" (W1A1 mean-sign) or "planes" (bit-serial)
        self.tiles = self.mode == "planes" and (amx.usable() if tiles is None else bool(tiles) and amx.usable())
        if self.mode == "sign" and c.ffn == "ffn_slfn":
            raise ConfigError("ffn='ffn_slfn' with the 1-bit mean-sign is not supported by the packed runtime")
        self.cls_pooling = c.pooling == "cls"
        self.pre_norm = c.norm == "pre"
        self.eps = np.float32(c.layer_norm_eps)
        t = tensors
        self.tok_dim = c.d_model if c.combine == "add" else c.d_model - c.d_model // 4
        self.tok_bits = self.tok_scale = self.tok_codes = self.tok_table = None
        if c.embedding_bits == 1:
            self.tok_bits, self.tok_scale = t["embeddings.token.bits"], t["embeddings.token.scale"]
        elif c.embedding_bits == 8:
            self.tok_codes, self.tok_scale = t["embeddings.token.codes"], t["embeddings.token.scale"]
        else:
            self.tok_table = t["embeddings.token.weight"]
        pos_dim = c.d_model if c.combine == "add" else c.d_model // 4
        self.positions = (
            t["embeddings.position.weight"] if c.position == "learned" else sinusoidal_table(c.max_len, pos_dim)
        )
        self.segments = t.get("embeddings.segment.weight")
        self.emb_norm = (t["embeddings.norm.weight"], t["embeddings.norm.bias"])
        self._arange = np.arange(c.max_len, dtype=np.int64)  # a single sentence's positions, sliced
        self.blocks = [self._prepare_block(t, prefix) for prefix in block_names(c)]
        self.exits = []
        for i in range(c.n_blocks):
            norm = (t[f"exits.{i}.norm.weight"], t[f"exits.{i}.norm.bias"]) if self.pre_norm else None
            fc1 = self._dense(t, f"exits.{i}.fc1", c.d_model)
            fc2 = self._dense(t, f"exits.{i}.fc2", c.exit_hidden)
            self.exits.append((norm, fc1, fc2))

    # ------------------------------------------------------------------------------------------------------
    # loading

    @classmethod
    def load(cls, path: str | Path, tiles: bool | None = None) -> PackedModel:
        """Read, validate and prepare a packed model file (raises `CheckpointError` if it is not sound)."""
        packed = read_packed(path)
        tokenizer = PackedTokenizer(packed.tokenizer_json, packed.text_encoder)
        return cls(packed.config, packed.tensors, tokenizer, packed.task_info, tiles=tiles)

    @staticmethod
    def _dense(t: dict[str, np.ndarray], name: str, k: int) -> _Dense:
        if f"{name}.bits" in t:
            # W1A32: alpha * sign(W), the very operand PyTorch multiplies by, unpacked once.
            w = unpack_weight(t[f"{name}.bits"], k) * t[f"{name}.alpha"][:, None]
        else:
            w = t[f"{name}.weight"]
        return _Dense(np.ascontiguousarray(w.T, dtype=np.float32), t[f"{name}.bias"])

    @staticmethod
    def _sign_parts(t: dict[str, np.ndarray], name: str, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A 1-bit linear's +-1 weights [N, K], alpha and bias."""
        return unpack_weight(t[f"{name}.bits"], k), t[f"{name}.alpha"], t[f"{name}.bias"]

    def _planes(self, t: dict[str, np.ndarray], block: str, name: str, k: int) -> _Planes:
        coding = self.config.input_coding(name)
        bits, z2 = self.config.act_bits, 0 if coding.non_negative else 2**self.config.act_bits - 1
        words = t[f"{block}.{name}.bits"]
        signs = unpack_weight(words, k)  # +-1 [N, k], unpacked once for the constants below
        rowsum = signs.sum(axis=1).astype(np.int64)
        offset = np.float32(0.5 if z2 == 0 else 2 ** (bits - 1))  # z + 1/2, exact
        # A floor m moves the levels to m + s * n: the codes are those of x - (b + m), computed as PyTorch does
        # (b + m in float32), and the m of every input reaches each output as alpha * m * rowsum, a constant.
        floor = np.float32(coding.floor)
        step, threshold = t[f"{block}.{name}.act_step"][0], t[f"{block}.{name}.act_threshold"][0] + floor
        corr = (z2 * rowsum).astype(np.int64)
        alpha = t[f"{block}.{name}.alpha"]
        bias = t[f"{block}.{name}.bias"]
        if floor:
            bias = (bias + alpha * floor * rowsum.astype(np.float32)).astype(np.float32)
        channels = t.get(f"{block}.{name}.act_outliers", np.zeros(0, dtype=np.int64))
        signed_alpha = np.ascontiguousarray(signs[:, channels].T * alpha, dtype=np.float32)
        zero_level = np.float32(_zero_level(step, threshold, offset, bits, z2) + floor)
        if self.tiles:  # the same signs in the tile unit's order (`amx.tile_weights`)
            words = amx.tile_weights(signs.astype(np.int8))
        lin = (words, alpha, corr, bias, step, threshold, offset)
        return _Planes(lin + (channels, signed_alpha, zero_level))

    @staticmethod
    def _binary(t: dict[str, np.ndarray], name: str, k: int, centre: float = 0.0) -> _Binary:
        bits = t[f"{name}.bits"]
        rowsum = unpack_signs(bits.T, k, np.float32).sum(axis=1)  # exact: small integers
        return _Binary(bits, t[f"{name}.alpha"], (np.float32(centre) * rowsum).astype(np.float32), t[f"{name}.bias"], k)

    def _prepare_block(self, t: dict[str, np.ndarray], p: str) -> dict:
        c = self.config
        d, f = c.d_model, c.d_ff
        block: dict = {
            "norm1": (t[f"{p}.norm1.weight"], t[f"{p}.norm1.bias"]),
            "norm2": (t[f"{p}.norm2.weight"], t[f"{p}.norm2.bias"]),
        }
        if self.mode == "sign":
            b = self._binary
            block["qkv"] = _concat_binary([b(t, f"{p}.attn.{n}", d) for n in ("q", "k", "v")])
            block["o"] = b(t, f"{p}.attn.o", d)
            # the down-projections' input centres: what the up-projection's epilogue subtracts before packing
            downs = ("s2", "f2") if c.ffn == "slfn" else ("lin2",)
            centre = {n: c.input_coding(n).centre for n in downs}
            block["centres"] = np.array([centre[n] for n in downs], dtype=np.float32)
            if c.ffn == "slfn":
                block["up"] = _concat_binary([b(t, f"{p}.ffn.s1", d), b(t, f"{p}.ffn.f1", d)])
                block["s2"] = b(t, f"{p}.ffn.s2", f, centre=centre["s2"])
                block["f2"] = b(t, f"{p}.ffn.f2", f, centre=centre["f2"])
            else:
                block["up"] = b(t, f"{p}.ffn.lin1", d)
                block["down"] = b(t, f"{p}.ffn.lin2", f, centre=centre["lin2"])
        elif self.mode == "planes":
            for name, k, _ in block_linears(c):
                block[name] = self._planes(t, p, name, k)
            block["gate"] = t.get(f"{p}.ffn.slfn_gate", np.zeros(1, dtype=np.float32))
        elif c.weight_bits == 1:  # W1A32
            sign = self._sign_parts
            for name, k, _ in block_linears(c):
                block[name] = _SignLinear.from_parts([sign(t, f"{p}.{name}", k)])
            block["qkv"] = _SignLinear.from_parts([sign(t, f"{p}.attn.{n}", d) for n in ("q", "k", "v")])
            for n in ("q", "k", "v"):
                del block[f"attn.{n}"]
            block["gate"] = t.get(f"{p}.ffn.slfn_gate")
        else:
            dn = self._dense
            for name, k, _ in block_linears(c):
                block[name] = dn(t, f"{p}.{name}", k)
            block["qkv"] = _concat_dense([block.pop(f"attn.{n}") for n in ("q", "k", "v")])
            block["gate"] = t.get(f"{p}.ffn.slfn_gate")
        return block

    # ------------------------------------------------------------------------------------------------------
    # the forward pass, on a ragged batch: x [n_tokens, d], offsets [B + 1]

    def _embed(self, ids: np.ndarray, positions: np.ndarray, segments: np.ndarray | None) -> np.ndarray:
        c = self.config
        binary = self.tok_bits is not None
        has_seg = self.segments is not None and segments is not None
        table = self.tok_table
        if self.tok_codes is not None:
            # int8 table: dequantize only the looked-up rows (codes * scale, as BinaryEmbedding computes them),
            # then let the float path read them in order; the table stays a quarter of float32 in memory.
            table = self.tok_codes[ids].astype(np.float32) * self.tok_scale[ids, None]
            ids = np.arange(len(ids), dtype=np.int64)
        return embed(kernels_for(len(ids)))(
            self.tok_bits if binary else _NO_BITS, self.tok_scale if binary else _NO_FLOATS,
            _NO_TABLE if binary else table, binary, self.tok_dim, ids, self.positions, positions,
            c.combine != "add", self.segments if has_seg else _NO_TABLE, segments if has_seg else _NO_IDS, has_seg,
            *self.emb_norm, self.eps,
        )  # fmt: skip

    def _block_binary(self, blk: dict, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """W1A1 block, one compiled call (`blocks.binary_block`): activations are packed right after each
        LayerNorm / nonlinearity and stay packed between binary layers."""
        c = self.config
        qkv, o, up = blk["qkv"], blk["o"], blk["up"]
        if c.ffn == "slfn":
            d1, d2, acts = blk["s2"], blk["f2"], _SIGMOID_TANH
        else:
            d1 = d2 = blk["down"]
            acts = _GELU
        fused = binary_block(kernels_for(len(x)))
        return fused(
            x, offsets, c.n_heads, self.pre_norm, c.ffn == "slfn", self.eps,
            qkv.bits, qkv.alpha, qkv.crs, qkv.bias, o.bits, o.alpha, o.crs, o.bias,
            up.bits, up.alpha, up.crs, up.bias, acts, blk["centres"],
            d1.bits, d1.alpha, d1.crs, d1.bias, d2.bits, d2.alpha, d2.crs, d2.bias,
            *blk["norm1"], *blk["norm2"], c.d_model, d1.k,
        )  # fmt: skip

    def _block_planes(self, blk: dict, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Bit-serial block (W1A2, W1A4, elastic W1A1), one compiled call (`blocks.planes_block`)."""
        c = self.config
        ffn_kind = {"slfn": B.FFN_SLFN, "ffn": B.FFN_PLAIN, "ffn_slfn": B.FFN_PLAIN_WITH_SLFN}[c.ffn]
        slfn = "ffn" if c.ffn == "slfn" else "ffn.slfn"
        names = ("attn.q", "attn.k", "attn.v", "attn.o", "ffn.lin1", "ffn.lin2")
        names += tuple(f"{slfn}.{n}" for n in ("s1", "s2", "f1", "f2"))
        # Layers this FFN kind does not have get a placeholder of the same types (never called).
        lins = [blk.get(n, blk.get("attn.q")).args for n in names]
        fused = planes_block(kernels_for(len(x)), self.tiles)
        return fused(
            x, offsets, c.n_heads, self.pre_norm, ffn_kind, self.eps, c.act_bits, *lins, blk["gate"],
            *blk["norm1"], *blk["norm2"],
        )  # fmt: skip

    def _block_dense(self, blk: dict, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """W1A32 block (linears from the bits, `_SignLinear`) or float block (BLAS); numba for attention and
        LayerNorm."""
        c = self.config
        ks = kernels_for(len(x))
        attn_in = ks.layernorm(x, *blk["norm1"], self.eps) if self.pre_norm else x
        ctx = ks.attention(blk["qkv"](attn_in), offsets, c.n_heads)
        attn = blk["attn.o"](ctx)
        h = ks.add(x, attn) if self.pre_norm else ks.layernorm(ks.add(x, attn), *blk["norm1"], self.eps)
        ffn_in = ks.layernorm(h, *blk["norm2"], self.eps) if self.pre_norm else h
        if c.ffn == "slfn":
            out = ks.gated_add(h, *self._slfn_dense(blk, ffn_in, "ffn"))
        else:
            delta = blk["ffn.lin2"](ks.gelu_rows(blk["ffn.lin1"](ffn_in)))
            if c.ffn == "ffn_slfn":  # FFN + gate * SLFN, in PyTorch's order
                s, f = self._slfn_dense(blk, ffn_in, "ffn.slfn")
                delta = delta + blk["gate"] * (s * f)
            out = ks.add(h, delta)
        return out if self.pre_norm else ks.layernorm(out, *blk["norm2"], self.eps)

    @staticmethod
    def _slfn_dense(blk: dict, ffn_in: np.ndarray, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """The SLFN's two branches s2(sigmoid(s1 .)) and f2(tanh(f1 .)), float."""
        a = blk[f"{prefix}.s1"](ffn_in)
        np.negative(a, out=a)
        np.exp(a, out=a)
        a += np.float32(1.0)
        s = blk[f"{prefix}.s2"](np.reciprocal(a, out=a))
        f = blk[f"{prefix}.f2"](np.tanh(blk[f"{prefix}.f1"](ffn_in)))
        return s, f

    def _exit(self, index: int, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        norm, fc1, fc2 = self.exits[index]
        g, b = norm if norm is not None else (self.emb_norm[0], self.emb_norm[1])  # unused without a norm
        return exit_head(x, offsets, self.cls_pooling, norm is not None, g, b, fc1.wt, fc1.bias, fc2.wt, fc2.bias)

    def _block(self, index: int, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        blk = self.blocks[0 if self.config.share_weights else index]
        if self.mode == "sign":
            return self._block_binary(blk, x, offsets)
        if self.mode == "planes":
            return self._block_planes(blk, x, offsets)
        return self._block_dense(blk, x, offsets)

    # ------------------------------------------------------------------------------------------------------
    # public API

    def _ragged(self, input_ids, token_type_ids):
        """Per-sample id sequences -> flat ids, positions, segments and offsets of the ragged batch."""
        c = self.config
        if len(input_ids) == 0:
            raise DataError("empty batch")
        lengths = [len(s) for s in input_ids]
        if min(lengths) < 1:
            raise DataError("every input needs at least one token")
        if max(lengths) > c.max_len:
            raise DataError(f"an input has {max(lengths)} tokens; this model takes at most {c.max_len}")
        ids = _flat(input_ids)
        if ids.min() < 0 or ids.max() >= c.vocab_size:
            raise DataError(f"token id out of range [0, {c.vocab_size}) for this model")
        if len(lengths) == 1:  # one sentence (the latency case): no cumsum / repeat
            offsets, positions = np.array([0, lengths[0]], dtype=np.int64), self._arange[: lengths[0]]
        else:
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            positions = np.arange(len(ids), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        segs = None
        if token_type_ids is not None and self.segments is not None:
            segs = _flat(token_type_ids)
            if segs.shape != ids.shape:
                raise DataError("token_type_ids do not match input_ids in length")
            if segs.size and (segs.min() < 0 or segs.max() >= len(self.segments)):
                raise DataError(f"segment id out of range [0, {len(self.segments)})")
        return ids, positions, segs, offsets

    def run(
        self,
        input_ids: list[list[int]] | list[np.ndarray],
        token_type_ids: list[list[int]] | None = None,
        rule: ExitRule | None = None,
    ) -> Prediction:
        """Run a batch of token-id sequences (unpadded, one per sample).

        With `rule`, each sample leaves at the first block where the rule fires (the last block always
        answers) and the batch shrinks; without, every sample runs every block and `exit_logits` [C, B, K]
        holds all exits (answer = the last block's logits).
        """
        ids, positions, segs, offsets = self._ragged(input_ids, token_type_ids)
        x = self._embed(ids, positions, segs)
        n, n_blocks = len(offsets) - 1, self.config.n_blocks
        if rule is None:
            all_logits = []
            for c in range(n_blocks):
                x = self._block(c, x, offsets)
                all_logits.append(self._exit(c, x, offsets))
            stacked = np.stack(all_logits)
            logits = stacked[-1].copy()
            exit_block = np.full(n, n_blocks, dtype=np.int64)
            return Prediction(logits, predictions_from_logits(logits), exit_block, stacked)

        tracker = ExitTracker(rule, n, n_blocks, self.config.n_classes)
        for c in range(n_blocks):
            x = self._block(c, x, offsets)
            keep = tracker.step(self._exit(c, x, offsets))
            if tracker.done:
                break
            if not keep.all():
                x, offsets = _compact(x, offsets, keep)
        return tracker.decision()

    def run_padded(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        token_type_ids: np.ndarray | None = None,
        rule: ExitRule | None = None,
    ) -> Prediction:
        """`run` on a right-padded [B, T] batch (the layout PyTorch's collate gives)."""
        input_ids = np.asarray(input_ids)
        mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask)
        lengths = mask.sum(axis=1).astype(np.int64)
        if not np.array_equal(mask.astype(bool), np.arange(mask.shape[1])[None, :] < lengths[:, None]):
            raise DataError("attention_mask must be right-padded (ones first, then zeros)")
        ids = [input_ids[i, : lengths[i]] for i in range(len(lengths))]
        segs = (
            None
            if token_type_ids is None
            else [np.asarray(token_type_ids)[i, : lengths[i]] for i in range(len(lengths))]
        )
        return self.run(ids, segs, rule)

    def encode(self, texts_a: list[str], texts_b: list[str | None] | None = None):
        """Token ids and segment ids of texts, with the tokenizer the packed file carries."""
        if self.tokenizer is None:
            raise ConfigError("this model was loaded without a tokenizer")
        return self.tokenizer.encode(texts_a, texts_b, self.max_len)


def _flat(sequences) -> np.ndarray:
    """The concatenation of per-sample id sequences as one int64 array."""
    if len(sequences) == 1:
        return np.ascontiguousarray(sequences[0], dtype=np.int64)
    return np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])


def _compact(x: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the token rows of the samples that left: the batch shrinks instead of being masked."""
    lengths = np.diff(offsets)[keep]
    starts = offsets[:-1][keep]
    new_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    rows = np.arange(new_offsets[-1], dtype=np.int64) + np.repeat(starts - new_offsets[:-1], lengths)
    return np.ascontiguousarray(x[rows]), new_offsets
