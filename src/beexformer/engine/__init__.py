"""The packed 1-bit engine: export (torch side), file format, kernels and the numpy/numba runtime.

For callers (the CLI's eval / predict / summary):

    from beexformer.engine import is_packed_model, load_packed
    if is_packed_model(path):          # a file; run directories are directories
        model = load_packed(path)      # PackedModel, or CheckpointError with a one-line reason
        out = model.run(ids, segs, rule=exit_rule)   # one batch -> exits.Prediction

Many inputs go through `inference.PackedPredictor` (or `load_predictor`), the one place that batches.

Importing this package imports neither torch nor numba; `load_packed` imports numba (not torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from beexformer.engine.format import is_packed_model, looks_packed, read_packed

if TYPE_CHECKING:
    from beexformer.engine.runtime import PackedModel
    from beexformer.engine.summary import PackedSummary

__all__ = ["is_packed_model", "looks_packed", "read_packed", "load_packed", "packed_summary"]


def load_packed(path) -> PackedModel:
    """Load a packed model file for inference (numpy + numba, no torch)."""
    from beexformer.engine.runtime import PackedModel

    return PackedModel.load(path)


def packed_summary(path) -> PackedSummary:
    """Bytes on disk of a packed file, split by kind, and its size ratio against its float32 checkpoint."""
    from beexformer.engine.summary import summarize

    return summarize(path)
