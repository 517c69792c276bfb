"""Checkpoints that survive a crash: each is written under a temporary name and renamed into place.

    RUN_DIR/checkpoints/
        ckpt-000200/      model/ (a complete model directory), state/ (Accelerate: optimizer, scheduler,
                          RNG), trainer_state.json
        ckpt-000400/
        LATEST            the name of the newest complete checkpoint (replaced atomically)

A SIGKILL at any moment leaves either the old or the new checkpoint complete: a directory only gets its
final name after every file in it has been written and flushed, and LATEST is updated after that.
Loading falls back to the newest complete checkpoint if LATEST is missing or points at something broken.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from beexformer.errors import CheckpointError

LATEST = "LATEST"
STATE_FILE = "trainer_state.json"
PREFIX = "ckpt-"


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def temporary_name(final: Path) -> Path:
    """Where `final` is written before it is renamed into place (the same for every process of a
    distributed run, so that all of them can write their part of the state into it)."""
    return final.with_name(f".{final.name}.tmp")


def begin_directory(final: Path) -> Path:
    """Create an empty temporary directory for `final` (removing leftovers of a crashed attempt)."""
    tmp = temporary_name(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_directory(tmp: Path, final: Path) -> Path:
    """Flush every file under tmp, then rename it to `final`, replacing an older `final`."""
    _fsync_tree(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    return final


def write_directory_atomically(final: Path, fill: Callable[[Path], None]) -> Path:
    """Single-process form: fill a temporary directory, then commit it as `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = begin_directory(final)
    fill(tmp)
    return commit_directory(tmp, final)


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def publish_checkpoint(root: Path, path: Path, keep: int = 2) -> None:
    """Point LATEST at a committed checkpoint and prune all but the newest `keep`."""
    atomic_write_text(root / LATEST, path.name + "\n")
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (with a trainer state), oldest first. Temporary dirs start with '.'."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def is_complete(path: Path) -> bool:
    try:
        json.loads((path / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (path / "model" / "model.safetensors").is_file() and (path / "state").is_dir()


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint, else None. (LATEST is written for people and tools; a crash
    between renaming a checkpoint into place and updating LATEST must not hide the newer one.)"""
    for path in reversed(list_checkpoints(root)):
        if is_complete(path):
            return path
    return None


def read_trainer_state(path: Path) -> dict:
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path / STATE_FILE}: unreadable trainer state ({err})") from None
