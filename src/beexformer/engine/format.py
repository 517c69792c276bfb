"""The packed model file: layout, and reading with validation (numpy only, no torch).

One safetensors file (no pickle). The header metadata carries

- ``format`` = "beexformer-packed", ``format_version`` = "2" (version 1, the same layout without a checksum,
  is still read);
- ``sha256``: a digest of every other metadata entry and every tensor (name, dtype, shape, bytes), so a
  flipped byte anywhere in the file is an error at load time rather than a different model that runs;
- ``config``: the `BEExformerConfig` as JSON; ``text_encoder``: the tokenizer's special tokens as JSON;
- ``task``: the model directory's task.json (task, label list, max_len used at training, exit rule);
- ``source``: the run directory it was exported from (informational).

Tensors (C = n_blocks, or 1 distinct block with shared weights; d = d_model; KW(k) = ceil(k / 64)):

- a 1-bit linear ``L`` (W [N, K] in PyTorch): ``L.bits`` uint64 [KW(K), N], the signs packed along the input
  dimension, word-major (see `packing`); ``L.alpha`` float32 [N] (mean|W| per row; a per-tensor scale is
  stored repeated); ``L.bias`` float32 [N];
- a float linear: ``L.weight`` float32 [N, K] and ``L.bias``;
- a 1-bit token table: ``embeddings.token.bits`` uint64 [V, KW(d_tok)] (row-major: a lookup reads one row)
  and ``embeddings.token.scale`` float32 [V]; a float table: ``embeddings.token.weight``;
- the input quantizer of a block linear ``L`` when its inputs are learned k-bit codes (`act_mode` "planes"):
  ``L.act_step``, ``L.act_threshold`` float32 [1], and with ``act_outliers = C > 0`` ``L.act_outliers`` int64
  [C], the input channels kept at full precision (distinct, ascending, below K);
  ``blocks.i.ffn.slfn_gate`` float32 [d] for ffn="ffn_slfn";
- LayerNorms, learned positions, segment embeddings: float32, under their PyTorch names;
- ``tokenizer.json.zlib``: uint8, the zlib-compressed tokenizer.json (compressed because an 8k WordPiece
  vocabulary is a sizeable share of a 1-bit model).

`read_packed` checks all of this before any kernel sees the data, so a truncated or corrupt file, or one whose
shapes do not fit its config, gives a `CheckpointError` naming the problem.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beexformer.config import BEExformerConfig
from beexformer.engine.packing import n_words
from beexformer.errors import BeexError, CheckpointError

FORMAT_NAME = "beexformer-packed"
FORMAT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")  # version 1 files carry no checksum
CHECKSUM_KEY = "sha256"
TOKENIZER_TENSOR = "tokenizer.json.zlib"
# Metadata: bytes of the float32 checkpoint the file was exported from (optional: older files lack it).
CHECKPOINT_BYTES_KEY = "float32_checkpoint_bytes"
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


@dataclass
class PackedFile:
    """A validated packed model: config, tensors by name, tokenizer JSON text and its special tokens."""

    path: Path
    config: BEExformerConfig
    tensors: dict[str, np.ndarray]
    tokenizer_json: str
    text_encoder: dict
    task_info: dict  # task.json of the exported model directory: task, label_list, max_len, exit rule
    metadata: dict[str, str]


def block_names(config: BEExformerConfig) -> list[str]:
    return [f"blocks.{i}" for i in range(1 if config.share_weights else config.n_blocks)]


def block_linears(config: BEExformerConfig) -> list[tuple[str, int, int]]:
    """(name inside a block, in_features, out_features) of every linear layer of one block."""
    d, f = config.d_model, config.d_ff
    attn = [(f"attn.{p}", d, d) for p in ("q", "k", "v", "o")]
    slfn = [("s1", d, f), ("s2", f, d), ("f1", d, f), ("f2", f, d)]
    if config.ffn == "slfn":
        return attn + [(f"ffn.{name}", k, n) for name, k, n in slfn]
    ffn = [("ffn.lin1", d, f), ("ffn.lin2", f, d)]
    if config.ffn == "ffn_slfn":  # BERT's FFN plus the gated SLFN branch (layers.slfn.FeedForwardWithSLFN)
        return attn + ffn + [(f"ffn.slfn.{name}", k, n) for name, k, n in slfn]
    return attn + ffn


def act_mode(config: BEExformerConfig) -> str:
    """How the inputs of a block's linears are represented at run time: "float" (act_bits 32), "sign" (the
    1-bit mean-sign, XNOR-popcount) or "planes" (the learned k-bit codes of `beexformer.quantizers`: LSQ at 2
    and 4 bits, the elastic sign at 1; bit-serial popcount)."""
    if config.act_bits == 32:
        return "float"
    if config.act_bits == 1 and config.act_binarizer == "mean_sign":
        return "sign"
    return "planes"


def expected_tensors(config: BEExformerConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (numpy dtype name, shape) of every tensor a packed file of this config holds."""
    c = config
    out: dict[str, tuple[str, tuple[int, ...]]] = {}

    def linear(name: str, k: int, n: int, bits: int) -> None:
        if bits == 1:
            out[f"{name}.bits"] = ("uint64", (n_words(k), n))
            out[f"{name}.alpha"] = ("float32", (n,))
        else:
            out[f"{name}.weight"] = ("float32", (n, k))
        out[f"{name}.bias"] = ("float32", (n,))

    pos_dim = c.d_model if c.combine == "add" else c.d_model // 4
    tok_dim = c.d_model if c.combine == "add" else c.d_model - pos_dim
    if c.embedding_bits == 1:
        out["embeddings.token.bits"] = ("uint64", (c.vocab_size, n_words(tok_dim)))
        out["embeddings.token.scale"] = ("float32", (c.vocab_size,))
    elif c.embedding_bits == 8:
        out["embeddings.token.codes"] = ("int8", (c.vocab_size, tok_dim))
        out["embeddings.token.scale"] = ("float32", (c.vocab_size,))
    else:
        out["embeddings.token.weight"] = ("float32", (c.vocab_size, tok_dim))
    if c.position == "learned":
        out["embeddings.position.weight"] = ("float32", (c.max_len, pos_dim))
    if c.n_segments > 0:
        out["embeddings.segment.weight"] = ("float32", (c.n_segments, c.d_model))
    out["embeddings.norm.weight"] = ("float32", (c.d_model,))
    out["embeddings.norm.bias"] = ("float32", (c.d_model,))
    planes = act_mode(c) == "planes"
    for block in block_names(c):
        for name, k, n in block_linears(c):
            linear(f"{block}.{name}", k, n, c.weight_bits)
            if planes:  # the input quantizer's learned step and threshold (0 for LSQ, which has none)
                out[f"{block}.{name}.act_step"] = ("float32", (1,))
                out[f"{block}.{name}.act_threshold"] = ("float32", (1,))
                if c.act_outliers:
                    out[f"{block}.{name}.act_outliers"] = ("int64", (c.act_outliers,))
        if c.ffn == "ffn_slfn":
            out[f"{block}.ffn.slfn_gate"] = ("float32", (c.d_model,))
        for norm in ("norm1", "norm2"):
            out[f"{block}.{norm}.weight"] = ("float32", (c.d_model,))
            out[f"{block}.{norm}.bias"] = ("float32", (c.d_model,))
    for i in range(c.n_blocks):
        if c.norm == "pre":
            out[f"exits.{i}.norm.weight"] = ("float32", (c.d_model,))
            out[f"exits.{i}.norm.bias"] = ("float32", (c.d_model,))
        linear(f"exits.{i}.fc1", c.d_model, c.exit_hidden, c.exit_bits)
        linear(f"exits.{i}.fc2", c.exit_hidden, c.n_classes, 32)
    return out


def content_digest(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """sha256 of the metadata (minus the digest itself) and of every tensor's name, dtype, shape and bytes, in
    name order: independent of where safetensors puts each tensor in the file."""
    h = hashlib.sha256()
    for key in sorted(metadata):
        if key != CHECKSUM_KEY:
            h.update(json.dumps([key, metadata[key]]).encode())
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(json.dumps([name, arr.dtype.str, list(arr.shape)]).encode())
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _fail(path: Path, message: str) -> CheckpointError:
    return CheckpointError(f"{path}: {message}")


def _read_header(path: Path) -> None:
    """Check the safetensors framing ourselves first, so truncation gets a plain-language message."""
    size = path.stat().st_size
    if size < 8:
        raise _fail(path, f"file is {size} bytes: truncated or not a packed model")
    with path.open("rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        if header_len <= 0 or header_len > _SAFETENSORS_MAX_HEADER or 8 + header_len > size:
            raise _fail(path, "not a safetensors file, or its header is truncated")
        try:
            header = json.loads(fh.read(header_len))
        except (ValueError, UnicodeDecodeError):
            raise _fail(path, "corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise _fail(path, "corrupt safetensors header")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise _fail(path, f"corrupt header entry for tensor {name!r}") from None
    if 8 + header_len + end > size:
        raise _fail(path, f"truncated: the header describes {8 + header_len + end} bytes, the file has {size}")


def read_packed(path: str | Path) -> PackedFile:
    """Load and validate a packed model; raise `CheckpointError` on anything unexpected."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such packed model file")
    _read_header(path)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise _fail(path, f"cannot read the safetensors data ({err})") from None
    if metadata.get("format") != FORMAT_NAME:
        raise _fail(path, f"not a beexformer packed model (format={metadata.get('format')!r})")
    version = metadata.get("format_version")
    if version not in READABLE_VERSIONS:
        raise _fail(path, f"packed format version {version!r}; this runtime reads {', '.join(READABLE_VERSIONS)}")
    if version != "1" and metadata.get(CHECKSUM_KEY) != content_digest(tensors, metadata):
        raise _fail(path, "checksum mismatch: the file is corrupt (re-export or copy it again)")
    try:
        config = BEExformerConfig.from_dict(json.loads(metadata["config"]))
        text_encoder = json.loads(metadata.get("text_encoder", "{}"))
        task_info = json.loads(metadata.get("task", "{}"))
    except (KeyError, ValueError, TypeError, BeexError) as err:
        raise _fail(path, f"missing or invalid config in the header ({err})") from None
    expected = expected_tensors(config)
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise _fail(path, f"missing tensors: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    for name, (dtype, shape) in expected.items():
        arr = tensors[name]
        if arr.dtype != np.dtype(dtype) or tuple(arr.shape) != shape:
            raise _fail(path, f"tensor {name} is {arr.dtype}{list(arr.shape)}, expected {dtype}{list(shape)}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise _fail(path, f"tensor {name} holds NaN or infinite values")
        if name.endswith(".act_step") and not (arr > 0).all():
            raise _fail(path, f"tensor {name}: a quantizer step must be > 0")
        if name.endswith(".act_outliers") and not _valid_channels(arr, _input_width(config, name)):
            raise _fail(path, f"tensor {name}: channels must be distinct, ascending and below the input width")
    _check_padding_bits(path, config, tensors)
    blob = tensors.get(TOKENIZER_TENSOR)
    if blob is None or blob.dtype != np.uint8 or blob.ndim != 1:
        raise _fail(path, f"missing tensor {TOKENIZER_TENSOR}")
    try:
        tokenizer_json = zlib.decompress(blob.tobytes()).decode("utf-8")
    except (zlib.error, UnicodeDecodeError):
        raise _fail(path, "the embedded tokenizer is corrupt") from None
    if not isinstance(task_info, dict) or not isinstance(text_encoder, dict):
        raise _fail(path, "invalid task or tokenizer description in the header")
    return PackedFile(path, config, tensors, tokenizer_json, text_encoder, task_info, metadata)


def _input_width(config: BEExformerConfig, name: str) -> int:
    """K of the block linear whose tensor is `name` (blocks.i.<linear>.<field>)."""
    linear = name.split(".", 2)[2].rsplit(".", 1)[0]
    return next(k for n, k, _ in block_linears(config) if n == linear)


def _valid_channels(channels: np.ndarray, width: int) -> bool:
    """Outlier channels the kernels may index: ascending (so distinct) and in [0, width)."""
    return bool(channels.size == 0 or (channels[0] >= 0 and channels[-1] < width and (np.diff(channels) > 0).all()))


def _check_padding_bits(path: Path, config: BEExformerConfig, tensors: dict[str, np.ndarray]) -> None:
    """The kernels rely on zero tail bits (dot = K - 2 * popcount): a file that breaks this is corrupt."""
    sizes = {f"{b}.{name}.bits": k for b in block_names(config) for name, k, _ in block_linears(config)}
    for i in range(config.n_blocks):
        sizes[f"exits.{i}.fc1.bits"] = config.d_model
    tok_dim = config.d_model if config.combine == "add" else config.d_model - config.d_model // 4
    for name, k in sizes.items():
        if name in tensors and k % 64:
            last = tensors[name][-1]
            if np.any(last >> np.uint64(k % 64)):
                raise _fail(path, f"tensor {name} has bits set beyond its {k} inputs")
    if "embeddings.token.bits" in tensors and tok_dim % 64:
        last = tensors["embeddings.token.bits"][:, -1]
        if np.any(last >> np.uint64(tok_dim % 64)):
            raise _fail(path, f"tensor embeddings.token.bits has bits set beyond its {tok_dim} columns")


def is_packed_model(path: str | Path) -> bool:
    """True if `path` should be run by the packed runtime: packed models are single files, run directories
    (and float checkpoints) are directories. A corrupt or truncated file is still "packed" here, so that
    `PackedModel.load` reports what is wrong with it instead of the caller trying it as a run directory."""
    return Path(path).is_file()


def looks_packed(path: str | Path) -> bool:
    """Stricter check: the file's safetensors header says it is a beexformer packed model."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if header_len <= 0 or header_len > _SAFETENSORS_MAX_HEADER:
                return False
            header = json.loads(fh.read(header_len))
        return header.get("__metadata__", {}).get("format") == FORMAT_NAME
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False
