"""Plain-text inputs: reading a text file into token chunks, and chat-formatting instruction prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from beexformer.errors import DataError


def read_text(path: str | Path) -> str:
    """The whole file as text; DataError naming the file if it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"text file is empty: {path}")
    return text


def tokenize_file(
    tokenizer: Any, path: str | Path, max_tokens: int | None = None, skip_tokens: int = 0
) -> torch.Tensor:
    """Token ids [N] of a text file, tokenized in blocks of lines (a 1 MB string at once is slow); the first
    `skip_tokens` are dropped (e.g. to calibrate on a part of a file that heads were not trained on)."""
    lines = read_text(path).splitlines(keepends=True)
    ids: list[int] = []
    block = 200
    for start in range(0, len(lines), block):
        ids.extend(tokenizer("".join(lines[start : start + block]), add_special_tokens=False).input_ids)
        if max_tokens is not None and len(ids) >= max_tokens + skip_tokens:
            break
    ids = ids[skip_tokens:]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if not ids:
        raise DataError(f"{path}: no tokens left after skipping {skip_tokens}")
    return torch.tensor(ids, dtype=torch.long)


def chunk(ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Non-overlapping rows [n, seq_len] of a token stream (the tail shorter than seq_len is dropped)."""
    n = ids.numel() // seq_len
    if n == 0:
        raise DataError(f"text has {ids.numel()} tokens, fewer than one sequence of {seq_len}")
    return ids[: n * seq_len].view(n, seq_len)


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """The prompt as a user turn of the model's chat template (plain text when it has none)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt
