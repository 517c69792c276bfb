"""Bytes of a packed file by kind, against the float32 checkpoint of the same model (`beex summary MODEL`)."""

from __future__ import annotations

from pathlib import Path

from beexformer.accounting import FileSizes, bits_label
from beexformer.engine.format import CHECKPOINT_BYTES_KEY, TOKENIZER_TENSOR, block_linears, block_names, read_packed


def _bit_shapes(config) -> dict[str, tuple[int, int]]:
    """name of each `.bits` tensor -> (rows, columns) of the float matrix it replaces."""
    shapes = {f"{b}.{name}.bits": (n, k) for b in block_names(config) for name, k, n in block_linears(config)}
    for i in range(config.n_blocks):
        shapes[f"exits.{i}.fc1.bits"] = (config.exit_hidden, config.d_model)
    tok_dim = config.d_model if config.combine == "add" else config.d_model - config.d_model // 4
    shapes["embeddings.token.bits"] = (config.vocab_size, tok_dim)
    return shapes


def _is_scale(name: str) -> bool:
    return name.endswith(".alpha") or name == "embeddings.token.scale"


def _file_sizes(path: Path, packed, parts: dict[str, int], n_params: int) -> FileSizes:
    recorded = packed.metadata.get(CHECKPOINT_BYTES_KEY)
    return FileSizes(
        float32_checkpoint_bytes=int(recorded) if recorded else 4 * n_params,
        packed_file_bytes=path.stat().st_size,
        tokenizer_bytes=parts["tokenizer (zlib)"],
        checkpoint_measured=bool(recorded),
    )


def summarize(path: str | Path) -> dict:
    """The file's size ratio (`accounting.FileSizes`), its bytes by kind and its parameter counts."""
    path = Path(path)
    packed = read_packed(path)
    config, tensors = packed.config, packed.tensors
    shapes = _bit_shapes(config)
    parts = {"1-bit weights": 0, "scales (alpha)": 0, "float32 tensors": 0, "tokenizer (zlib)": 0}
    binary_params = float_params = 0  # parameters of the model stored as 1 bit / as 32 bits
    for name, arr in tensors.items():
        if name == TOKENIZER_TENSOR:
            parts["tokenizer (zlib)"] += arr.nbytes
        elif name.endswith(".bits"):
            parts["1-bit weights"] += arr.nbytes
            rows, cols = shapes[name]
            binary_params += rows * cols
        elif _is_scale(name):
            parts["scales (alpha)"] += arr.nbytes
        else:
            parts["float32 tensors"] += arr.nbytes
            float_params += arr.size
    parts["header (config, metadata)"] = path.stat().st_size - sum(parts.values())
    total = binary_params + float_params
    sizes = _file_sizes(path, packed, parts, total)
    return {
        "file": str(path),
        "format": f"{packed.metadata.get('format')} v{packed.metadata.get('format_version')}",
        "task": packed.task_info.get("task", ""),
        "bits (weights / activations / embeddings / exits)": (
            f"{bits_label(config)} / {config.embedding_bits} / {config.exit_bits}"
        ),
        "parameters": {"total": total, "1-bit": binary_params, "32-bit": float_params},
        "1-bit share of parameters": round(binary_params / max(1, total), 4),
        "size ratio (float32 checkpoint file / packed file)": round(sizes.size_ratio, 2),
        "size ratio without the tokenizer": round(sizes.size_ratio_without_tokenizer, 2),
        "float32 checkpoint bytes": sizes.float32_checkpoint_bytes,
        "float32 checkpoint bytes measured at export": sizes.checkpoint_measured,
        "packed file bytes": sizes.packed_file_bytes,
        "parts (bytes)": parts,
        "binarized part ratio (float32 / (bits + scales))": round(
            4 * binary_params / max(1, parts["1-bit weights"] + parts["scales (alpha)"]), 2
        ),
    }


def file_sizes(path: str | Path) -> FileSizes:
    """The size ratio of a packed file: its bytes against those of the float32 checkpoint it came from."""
    info = summarize(path)
    return FileSizes(
        float32_checkpoint_bytes=info["float32 checkpoint bytes"],
        packed_file_bytes=info["packed file bytes"],
        tokenizer_bytes=info["parts (bytes)"]["tokenizer (zlib)"],
        checkpoint_measured=info["float32 checkpoint bytes measured at export"],
    )
