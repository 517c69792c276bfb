"""A model directory as the trainer writes it and `beex eval`/`predict`/`export` read it.

    MODEL_DIR/
        config.json          BEExformerConfig
        model.safetensors    latent float32 weights (the packed 1-bit form is `beex export`'s output)
        tokenizer.json       + text_encoder.json: the TextEncoder
        task.json            task name, label list, max_len, the exit rule chosen at training time

A run directory (RUN_DIR) holds `best/` (a model directory), `checkpoints/` and `log.jsonl`; commands that
take a model accept either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beexformer.errors import CheckpointError

TASK_FILE = "task.json"


@dataclass
class TaskInfo:
    task: str  # canonical GLUE task name
    label_list: list[str]
    max_len: int
    exit_rule: str = "fractional_entropy"
    exit_threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: Path) -> None:
        (directory / TASK_FILE).write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> TaskInfo:
        path = directory / TASK_FILE
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise CheckpointError(f"{directory}: no {TASK_FILE} (is this a beex model directory?)") from None
        except (json.JSONDecodeError, TypeError) as err:
            raise CheckpointError(f"{path}: unreadable ({err})") from None


def resolve_model_dir(path: str | Path) -> Path:
    """RUN_DIR -> RUN_DIR/best; a model directory stays as it is. Clear error otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if (path / TASK_FILE).is_file():
        return path
    if (path / "best" / TASK_FILE).is_file():
        return path / "best"
    raise CheckpointError(
        f"{path}: neither a model directory (with {TASK_FILE}) nor a run directory with best/ "
        "(train one with `beex train`, or pass a packed model file from `beex export`)"
    )


def save_model_dir(directory: Path, model, encoder, info: TaskInfo) -> None:
    """Write a complete model directory (not atomic by itself: callers write to a temporary name)."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    encoder.save(directory)
    info.save(directory)


def load_model_dir(path: str | Path):
    """(model in eval mode, TextEncoder, TaskInfo) from a model or run directory."""
    from beexformer.data.tokenizer import TextEncoder
    from beexformer.model import BEExformer

    directory = resolve_model_dir(path)
    info = TaskInfo.load(directory)
    model = BEExformer.from_pretrained(directory)
    encoder = TextEncoder.load(directory)
    return model, encoder, info
