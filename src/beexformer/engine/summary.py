"""Bytes of a packed file by kind, against the float32 checkpoint of the same model (`beex summary MODEL`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


@dataclass(frozen=True)
class PackedSummary:
    """What a packed file holds: its size ratio, its bytes by kind and its parameter counts."""

    file: str
    format: str
    task: str
    bits: str  # weights / activations / embeddings / exits
    binary_params: int  # stored as 1 bit
    float_params: int  # stored as 32 bits
    sizes: FileSizes
    parts: dict[str, int]  # bytes by kind; they add up to the file
    int8_params: int = 0  # stored as 8 bits (an int8 token table)

    @property
    def total_params(self) -> int:
        return self.binary_params + self.int8_params + self.float_params

    def to_dict(self) -> dict[str, Any]:
        """The form `beex summary FILE` prints (and writes with --json)."""
        return {
            "file": self.file,
            "format": self.format,
            "task": self.task,
            "bits (weights / activations / embeddings / exits)": self.bits,
            "parameters": {
                "total": self.total_params,
                "1-bit": self.binary_params,
                **({"8-bit": self.int8_params} if self.int8_params else {}),
                "32-bit": self.float_params,
            },
            "1-bit share of parameters": round(self.binary_params / max(1, self.total_params), 4),
            "size ratio (float32 checkpoint file / packed file)": round(self.sizes.size_ratio, 2),
            "size ratio without the tokenizer": round(self.sizes.size_ratio_without_tokenizer, 2),
            "float32 checkpoint bytes": self.sizes.float32_checkpoint_bytes,
            "float32 checkpoint bytes measured at export": self.sizes.checkpoint_measured,
            "packed file bytes": self.sizes.packed_file_bytes,
            "parts (bytes)": dict(self.parts),
            "binarized part ratio (float32 / (bits + scales))": round(
                4 * self.binary_params / max(1, self.parts["1-bit weights"] + self.parts["scales (alpha)"]), 2
            ),
        }


def summarize(path: str | Path) -> PackedSummary:
    """The file's size ratio (`accounting.FileSizes`), its bytes by kind and its parameter counts."""
    path = Path(path)
    packed = read_packed(path)
    config, tensors = packed.config, packed.tensors
    shapes = _bit_shapes(config)
    parts = {"1-bit weights": 0, "scales (alpha)": 0, "float32 tensors": 0, "tokenizer (zlib)": 0}
    binary_params = int8_params = float_params = 0  # parameters of the model stored as 1, 8 and 32 bits
    for name, arr in tensors.items():
        if name == TOKENIZER_TENSOR:
            parts["tokenizer (zlib)"] += arr.nbytes
        elif arr.dtype == np.int8:
            parts["int8 codes"] = parts.get("int8 codes", 0) + arr.nbytes
            int8_params += arr.size
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
    return PackedSummary(
        file=str(path),
        format=f"{packed.metadata.get('format')} v{packed.metadata.get('format_version')}",
        task=packed.task_info.get("task", ""),
        bits=f"{bits_label(config)} / {config.embedding_bits} / {config.exit_bits}",
        binary_params=binary_params,
        float_params=float_params,
        sizes=_file_sizes(path, packed, parts, binary_params + int8_params + float_params),
        parts=parts,
        int8_params=int8_params,
    )


def file_sizes(path: str | Path) -> FileSizes:
    """The size ratio of a packed file: its bytes against those of the float32 checkpoint it came from."""
    return summarize(path).sizes
