"""Turning training text files into frozen-backbone features, cached on disk so a resumed run skips the
expensive pass through the model."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from beexformer.errors import CheckpointError
from beexformer.llm.adapters import ModelAdapter
from beexformer.llm.loading import default_cache_dir
from beexformer.llm.text import chunk, tokenize_file
from beexformer.llm.training import Features, extract_features


def _features_key(texts: list[tuple[str, float]], layers: list[int], max_tokens: int, seq_len: int, model: str) -> str:
    parts = []
    for path, weight in texts:
        st = Path(path).stat()
        parts.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns, weight])
    # The leading version changes whenever what is stored changes (2: float32 where float16 overflows).
    blob = json.dumps([2, parts, layers, max_tokens, seq_len, model], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_extract_features(
    adapter: ModelAdapter,
    tokenizer: Any,
    texts: list[tuple[str, float]],
    layers: list[int],
    max_tokens: int,
    seq_len: int,
    model_name: str,
    cache_dir: str | None,
    log: Callable[[str], None],
) -> Features:
    """Features of all text files (each with its sampling weight), from the cache directory if present."""
    rows_by_file = [(chunk(tokenize_file(tokenizer, path, max_tokens), seq_len), w) for path, w in texts]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = _features_key(texts, layers, max_tokens, seq_len, model_name)
    path = cache / "features" / f"{key}.pt"
    if path.exists():
        try:
            data = torch.load(path, weights_only=True)
            log(f"features from {path}")
            return Features(**data)
        except (RuntimeError, TypeError) as err:
            raise CheckpointError(f"corrupt feature cache {path}: {err} (delete it)") from err
    parts = []
    start = time.perf_counter()
    for (rows, weight), (name, _) in zip(rows_by_file, texts, strict=True):
        log(f"extracting features of {name}: {rows.numel()} tokens in {rows.shape[0]} rows of {seq_len}")

        def progress(done: int, total: int, name: str = name) -> None:
            if done % 32 == 0 or done == total:
                log(f"  {name}: {done}/{total} rows, {time.perf_counter() - start:.0f}s")

        parts.append(extract_features(adapter, rows, layers, weight=weight, progress=progress))
    features = Features.concat(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(features.__dict__, tmp)
    tmp.replace(path)
    log(f"cached features at {path}")
    return features
