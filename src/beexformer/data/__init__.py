"""The data layer: GLUE tasks and loaders, text encoding, batching and metrics.

Batching (`beexformer.data.collate`) needs torch and is not imported here, so that the loaders, the
tokenizer and the metrics serve the torch-free packed runtime too."""

from beexformer.data.glue import (
    TASKS,
    Example,
    GlueTask,
    get_task,
    iter_texts,
    load_split,
    load_split_hf,
    resolve_data_dir,
    split_filename,
)
from beexformer.data.metrics import accuracy, compute_metrics, f1, matthews_corrcoef, pearson, spearman
from beexformer.data.tokenizer import EncodedBatch, TextEncoder

__all__ = [
    "TASKS",
    "EncodedBatch",
    "Example",
    "GlueTask",
    "TextEncoder",
    "accuracy",
    "compute_metrics",
    "f1",
    "get_task",
    "iter_texts",
    "load_split",
    "load_split_hf",
    "matthews_corrcoef",
    "pearson",
    "resolve_data_dir",
    "spearman",
    "split_filename",
]
