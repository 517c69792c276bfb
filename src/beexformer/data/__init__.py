"""The data layer: GLUE tasks and loaders, text encoding, batching and metrics."""

from beexformer.data.collate import BucketBatchSampler, EncodedDataset, collate, make_collate
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
    "BucketBatchSampler",
    "EncodedBatch",
    "EncodedDataset",
    "Example",
    "GlueTask",
    "TextEncoder",
    "accuracy",
    "collate",
    "compute_metrics",
    "f1",
    "get_task",
    "iter_texts",
    "load_split",
    "load_split_hf",
    "make_collate",
    "matthews_corrcoef",
    "pearson",
    "resolve_data_dir",
    "spearman",
    "split_filename",
]
