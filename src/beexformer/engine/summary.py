"""Bytes of a packed file by kind, against the float32 checkpoint of the same model (`beex summary MODEL`)."""

from __future__ import annotations

from pathlib import Path

from beexformer.engine.format import TOKENIZER_TENSOR, block_linears, block_names, read_packed


def _bit_shapes(config) -> dict[str, tuple[int, int]]:
    """name of each `.bits` tensor -> (rows, columns) of the float matrix it replaces."""
    shapes = {f"{b}.{name}.bits": (n, k) for b in block_names(config) for name, k, n in block_linears(config)}
    for i in range(config.n_blocks):
        shapes[f"exits.{i}.fc1.bits"] = (config.exit_hidden, config.d_model)
    tok_dim = config.d_model if config.combine == "add" else config.d_model - config.d_model // 4
    shapes["embeddings.token.bits"] = (config.vocab_size, tok_dim)
    return shapes


def summarize(path: str | Path) -> dict:
    """Sizes in bytes: the file, its parts, the float32 equivalent and the ratio (file vs float32)."""
    packed = read_packed(path)
    config, tensors = packed.config, packed.tensors
    shapes = _bit_shapes(config)
    parts = {"1-bit weights": 0, "scales (alpha)": 0, "float32 tensors": 0, "tokenizer (zlib)": 0}
    float_params = 0
    binary_params = 0
    for name, arr in tensors.items():
        if name == TOKENIZER_TENSOR:
            parts["tokenizer (zlib)"] += arr.nbytes
        elif name.endswith(".bits"):
            parts["1-bit weights"] += arr.nbytes
            rows, cols = shapes[name]
            binary_params += rows * cols
            float_params += rows * cols
        elif name.endswith(".alpha") or name == "embeddings.token.scale":
            parts["scales (alpha)"] += arr.nbytes
        else:
            parts["float32 tensors"] += arr.nbytes
            float_params += arr.size
    file_bytes = Path(path).stat().st_size
    parts["header (config, metadata)"] = file_bytes - sum(parts.values())
    float32_bytes = 4 * float_params
    scale_params = sum(
        arr.size for name, arr in tensors.items() if name.endswith(".alpha") or name == "embeddings.token.scale"
    )
    info: dict = {
        # The keys of `accounting.SizeReport.to_dict`, so callers can treat both alike ...
        "binary_params": binary_params,
        "float_params": float_params - binary_params,
        "scale_params": scale_params,
        "total_params": float_params,
        "binary_share": binary_params / max(1, float_params),
        "packed_bytes": 0,  # set below: the real file size
        "float32_bytes": 4 * float_params,
        "size_ratio": 0.0,
        # ... and the file's own breakdown.
        "file": str(path),
        "format": f"{packed.metadata.get('format')} v{packed.metadata.get('format_version')}",
        "task": packed.task_info.get("task", ""),
        "bits (weights / activations / embeddings / exits)": (
            f"W{config.weight_bits}A{config.act_bits} / {config.embedding_bits} / {config.exit_bits}"
        ),
        "parameters": {"total": float_params, "1-bit": binary_params, "32-bit": float_params - binary_params},
        "bytes on disk": file_bytes,
        "parts (bytes)": parts,
        "float32 checkpoint bytes (all parameters x 4)": float32_bytes,
        "size ratio (float32 / packed file)": round(float32_bytes / file_bytes, 2),
        "size ratio without the tokenizer": round(float32_bytes / (file_bytes - parts["tokenizer (zlib)"]), 2),
        "binarized part ratio (float32 / (bits + scales))": round(
            4 * binary_params / max(1, parts["1-bit weights"] + parts["scales (alpha)"]), 2
        ),
    }
    info["packed_bytes"] = file_bytes
    info["size_ratio"] = float32_bytes / file_bytes
    source = packed.metadata.get("source")
    if source and (Path(source) / "model.safetensors").is_file():
        ckpt = (Path(source) / "model.safetensors").stat().st_size
        info["source float32 checkpoint on disk"] = {
            "path": str(Path(source) / "model.safetensors"),
            "bytes": ckpt,
            "ratio (checkpoint / packed file)": round(ckpt / file_bytes, 2),
        }
    return info
