"""The one door for running a trained model on many inputs, over its two runtimes: PyTorch (a model or run
directory) and the packed 1-bit runtime (a file written by `beex export`; numpy + numba, torch never imported).

    predictor = load_predictor(path)
    out = predictor.predict(texts_a, texts_b, rule, batch_size=64)  # exits.Prediction, in input order
    data = predictor.exit_logits(examples)                          # every exit's logits, for eval and sweeps

Batching lives here only: inputs are sorted by length into batches (less padding), each batch runs with
per-sample early exit and batch compaction, and the results are scattered back to input order. The
runtimes themselves (`BEExformer.early_exit`, `PackedModel.run`) take one batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from beexformer.accounting import FileSizes
from beexformer.bundle import TaskInfo
from beexformer.config import BEExformerConfig
from beexformer.evaluation import ExitLogits
from beexformer.exits import ExitRule, NeverExit, Prediction, build_exit_rule, predictions_from_logits


class Predictor(ABC):
    config: BEExformerConfig
    info: TaskInfo
    kind: str  # "pytorch" or "packed"
    path: Path

    def default_rule(self) -> ExitRule:
        """The exit rule chosen at training time (task.json), else the paper's."""
        return build_exit_rule(self.info.exit_rule, self.info.exit_threshold)

    @abstractmethod
    def encode(self, texts_a: list[str], texts_b: list[str | None] | None) -> tuple[list, list]:
        """Token ids and segment ids per text (unpadded)."""

    @abstractmethod
    def _early_exit_batch(self, ids: list, segs: list, rule: ExitRule) -> tuple[np.ndarray, np.ndarray]:
        """One batch with per-sample early exit: (logits [b, K], exit block [b])."""

    @abstractmethod
    def _all_exits_batch(self, ids: list, segs: list) -> np.ndarray:
        """One batch through every block: logits [b, C, K]."""

    def run(self, ids: list, segs: list, rule: ExitRule | None, batch_size: int = 64) -> Prediction:
        """Per-sample early exit (or, with rule None, every block) on encoded inputs, in length-sorted
        batches whose results are scattered back to input order."""
        rule = rule or NeverExit()
        n, k = len(ids), self.config.n_classes
        logits, blocks = np.zeros((n, k), dtype=np.float32), np.zeros(n, dtype=np.int64)
        for idx in _length_batches(ids, batch_size):
            logits[idx], blocks[idx] = self._early_exit_batch([ids[i] for i in idx], [segs[i] for i in idx], rule)
        return Prediction(logits, predictions_from_logits(logits), blocks)

    def all_exit_logits(self, ids: list, segs: list, batch_size: int = 128) -> np.ndarray:
        """[N, C, K]: the logits of every exit for every input."""
        out = np.zeros((len(ids), self.config.n_blocks, self.config.n_classes), dtype=np.float32)
        for idx in _length_batches(ids, batch_size):
            out[idx] = self._all_exits_batch([ids[i] for i in idx], [segs[i] for i in idx])
        return out

    @abstractmethod
    def size(self) -> FileSizes:
        """Bytes of the float32 checkpoint and of the packed file, whose quotient is the size ratio."""

    def exit_logits(self, examples) -> ExitLogits:
        ids, segs = self.encode([e.text_a for e in examples], [e.text_b for e in examples])
        labels = [e.label for e in examples]
        has_labels = all(label is not None for label in labels)
        return ExitLogits(
            self.all_exit_logits(ids, segs),
            np.array([len(s) for s in ids]),
            np.array(labels) if has_labels else None,
        )

    def predict(
        self,
        texts_a: list[str],
        texts_b: list[str | None] | None = None,
        rule: ExitRule | None = None,
        batch_size: int = 64,
    ) -> Prediction:
        """Texts (and second texts of pairs) -> one Prediction in input order; `rule` None: the model's own."""
        ids, segs = self.encode(texts_a, texts_b)
        return self.run(ids, segs, rule or self.default_rule(), batch_size=batch_size)


def _length_batches(ids: list, batch_size: int):
    """Indices in batches of similar length (less padding); the caller scatters results back."""
    order = np.argsort([len(s) for s in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class TorchPredictor(Predictor):
    kind = "pytorch"

    def __init__(self, path: str | Path) -> None:
        from beexformer.bundle import load_model_dir, resolve_model_dir

        self.path = resolve_model_dir(path)
        self.model, self.encoder, self.info = load_model_dir(self.path)
        self.config = self.model.config

    def encode(self, texts_a, texts_b):
        batch = self.encoder.encode_texts(texts_a, texts_b, self.info.max_len)
        return batch.input_ids, batch.token_type_ids

    def _padded(self, ids, segs):
        from beexformer.data.collate import pad_sequences

        return pad_sequences(ids, segs, self.encoder.pad_id)

    def _early_exit_batch(self, ids, segs, rule):
        out = self.model.early_exit(*self._padded(ids, segs), rule)
        return out.logits, out.exit_block

    def _all_exits_batch(self, ids, segs):
        import torch

        with torch.no_grad():
            return self.model(*self._padded(ids, segs)).exit_logits.numpy().transpose(1, 0, 2)

    def size(self) -> FileSizes:
        from beexformer.engine.export import measure_file_sizes

        return measure_file_sizes(self.path)  # exports to a temporary file: the ratio is of real files


class PackedPredictor(Predictor):
    kind = "packed"

    def __init__(self, path: str | Path) -> None:
        from beexformer.engine import load_packed

        self.path = Path(path)
        self.packed = load_packed(self.path)
        self.config = self.packed.config
        self.info = _packed_task_info(self.packed)

    def encode(self, texts_a, texts_b):
        return self.packed.encode(list(texts_a), None if texts_b is None else list(texts_b))

    def _early_exit_batch(self, ids, segs, rule):
        out = self.packed.run(ids, segs, rule)
        return out.logits, out.exit_block

    def _all_exits_batch(self, ids, segs):
        return self.packed.run(ids, segs, None).exit_logits.transpose(1, 0, 2)

    def size(self) -> FileSizes:
        from beexformer.engine.summary import file_sizes

        return file_sizes(self.path)


def _packed_task_info(packed) -> TaskInfo:
    info = getattr(packed, "task_info", None)
    if isinstance(info, TaskInfo):
        return info
    if isinstance(info, dict) and info:  # a file exported without a task description has {}
        known = {k: v for k, v in info.items() if k in TaskInfo.__dataclass_fields__}
        return TaskInfo(**known)
    return TaskInfo(task="", label_list=[], max_len=packed.config.max_len)


def load_predictor(path: str | Path) -> Predictor:
    """A packed file -> the 1-bit runtime (no torch); a model or run directory -> PyTorch."""
    from beexformer.engine import is_packed_model

    if Path(path).is_file() and is_packed_model(path):
        return PackedPredictor(path)
    return TorchPredictor(path)
