"""The server's only contact with the inference API: load a packed model, describe it, run a batch of texts.

Everything `beex serve` needs from `beexformer.inference` / `beexformer.engine` goes through this module, so
a change of that API touches one file. Packed files only: the PyTorch path would import torch, which the
server process never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from beexformer.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class ModelCard:
    """What `GET /v1/models` says about a served model."""

    name: str
    task: str
    labels: list[str]
    pair: bool | None  # True: inputs are [a, b] pairs; False: single texts; None: task unknown, both accepted
    regression: bool
    weight_bits: int
    act_bits: int
    n_blocks: int
    max_tokens: int
    file_bytes: int
    float32_bytes: int  # of the float32 checkpoint the file was exported from
    exit_rule: str

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "task": self.task,
            "labels": self.labels,
            "input": {True: "pair", False: "text", None: "text or pair"}[self.pair],
            "regression": self.regression,
            "bits": {"weights": self.weight_bits, "activations": self.act_bits},
            "size": {"file_bytes": self.file_bytes, "float32_bytes": self.float32_bytes},
            "n_blocks": self.n_blocks,
            "max_tokens": self.max_tokens,
            "exit_rule": self.exit_rule,
        }


@dataclass(frozen=True)
class InputResult:
    """The answer for one input: what `beex predict` prints, plus every class's probability."""

    label: str | int | None  # None for regression
    score: float  # probability of the label, or the predicted value for regression
    probabilities: list[float] | None  # per class, in label order; None for regression
    exit_layer: int  # 1-based block the input left at

    def to_json(self) -> dict:
        out: dict = {"label": self.label, "score": self.score}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        out["exit_layer"] = self.exit_layer
        return out


class ServedModel:
    """A packed model loaded for serving. `predict` is called from the inference thread only."""

    def __init__(self, name: str, path: str | Path) -> None:
        from beexformer.engine import is_packed_model
        from beexformer.inference import PackedPredictor

        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{path}: no such file")
        if not (path.is_file() and is_packed_model(path)):
            raise CheckpointError(
                f"{path}: not a packed model; beex serve takes files from `beex export RUN --out FILE`"
            )
        self.predictor = PackedPredictor(path)
        self.card = _card(name, path, self.predictor)

    def warm_up(self) -> None:
        """One tiny batch, so the kernels are compiled (or loaded from numba's cache) before the first request."""
        pair = self.card.pair is True
        self.predict(["warm up"], ["warm up"] if pair else None, None, batch_size=1)

    def exit_rule(self, threshold: float | None):
        """The model's stored exit rule, with its knob set to `threshold` when given (ConfigError if invalid)."""
        from beexformer.exits import build_exit_rule

        rule = self.predictor.default_rule()
        if threshold is None:
            return rule
        if rule.threshold_name == "patience" and (threshold != int(threshold) or threshold < 1):
            raise ConfigError(f"exit_threshold is a patience for this model's rule ({rule.name}): an integer >= 1")
        value = int(threshold) if rule.threshold_name == "patience" else float(threshold)
        try:
            return build_exit_rule(rule.name, value)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"exit_threshold: {err}") from None

    def predict(
        self, texts_a: list[str], texts_b: list[str] | None, threshold: float | None, batch_size: int
    ) -> list[InputResult]:
        """Per-sample early exit on the texts (run in length-sorted batches of `batch_size`), in input order."""
        from beexformer.exits import log_softmax

        out = self.predictor.predict(texts_a, texts_b, self.exit_rule(threshold), batch_size=batch_size)
        if self.card.regression:
            values, blocks = out.predictions.tolist(), out.exit_block.tolist()
            return [InputResult(None, v, None, b) for v, b in zip(values, blocks, strict=True)]
        rows = np.exp(log_softmax(out.logits)).tolist()  # one conversion per batch, not one per input
        labels = self.card.labels
        return [
            InputResult(labels[k] if k < len(labels) else k, row[k], row, block)
            for k, row, block in zip(out.predictions.tolist(), rows, out.exit_block.tolist(), strict=True)
        ]


def _card(name: str, path: Path, predictor) -> ModelCard:
    info, config = predictor.info, predictor.config
    size = predictor.size()
    return ModelCard(
        name=name,
        task=info.task,
        labels=[str(label) for label in info.label_list],
        pair=_is_pair(info.task),
        regression=config.n_classes == 1,
        weight_bits=config.weight_bits,
        act_bits=config.act_bits,
        n_blocks=config.n_blocks,
        max_tokens=int(predictor.packed.max_len),
        file_bytes=size.packed_file_bytes,
        float32_bytes=size.float32_checkpoint_bytes,
        exit_rule=predictor.default_rule().describe(),
    )


def _is_pair(task: str) -> bool | None:
    from beexformer.data.glue import get_task

    if not task:
        return None
    try:
        return get_task(task).is_pair
    except (KeyError, ValueError):
        return None


def default_threads() -> int:
    """The model's threads when `--threads` is not given: every core. A parallel kernel only runs on batches of
    256 token rows or more, and then the clients of that batch wait for it, so the event loop has little to
    do; in three A/B pairs at concurrency 32 on two cores (docs/serve.md) the batched server answered 1.0-1.29x
    the requests per second it did with one core left to the event loop, and never fewer."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pin_threads(n: int | None) -> None:
    """Use `n` threads (None: `default_threads()`) for the kernels called from *this* thread (numba's count is
    per calling thread, so the server's inference thread sets its own)."""
    from beexformer.engine.threads import set_threads

    set_threads(default_threads() if n is None else n)
