"""Dataset, dynamic-padding collate function and a length-bucketing batch sampler."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EncodedDataset", "collate", "BucketBatchSampler", "make_collate"]


class EncodedDataset(Dataset):
    """Encoded examples: token ids, segment ids and (optionally) labels.

    Items are dicts ``{"input_ids": list[int], "token_type_ids": list[int], "labels": int | float}``
    (no ``labels`` key when the dataset has no labels, e.g. GLUE test files).
    """

    def __init__(
        self,
        input_ids: Sequence[Sequence[int]],
        token_type_ids: Sequence[Sequence[int]] | None = None,
        labels: Sequence[int | float | None] | None = None,
    ) -> None:
        if token_type_ids is None:
            token_type_ids = [[0] * len(ids) for ids in input_ids]
        if len(token_type_ids) != len(input_ids):
            raise ValueError(f"{len(input_ids)} input_ids but {len(token_type_ids)} token_type_ids")
        if labels is not None:
            if len(labels) != len(input_ids):
                raise ValueError(f"{len(input_ids)} input_ids but {len(labels)} labels")
            # Unlabeled splits come as all-None labels: treat them as no labels.
            if all(label is None for label in labels):
                labels = None
            elif any(label is None for label in labels):
                raise ValueError("some labels are None and others are not")
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids
        self.labels = labels

    @classmethod
    def from_encoded(cls, encoded: Any, labels: Sequence[int | float | None] | None = None) -> EncodedDataset:
        """Build from a :class:`beexformer.data.tokenizer.EncodedBatch` (anything with ``input_ids`` and
        ``token_type_ids``)."""
        return cls(encoded.input_ids, encoded.token_type_ids, labels)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "input_ids": self.input_ids[index],
            "token_type_ids": self.token_type_ids[index],
        }
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item

    @property
    def lengths(self) -> list[int]:
        """Token count of every example (for :class:`BucketBatchSampler`)."""
        return [len(ids) for ids in self.input_ids]


def collate(batch: Sequence[dict[str, Any]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad a list of dataset items to the longest one in the batch (dynamic padding).

    Returns:
        ``input_ids`` long [B, T] (padded with ``pad_id``), ``attention_mask`` long [B, T] (1 = token,
        0 = padding), ``token_type_ids`` long [B, T] (padded with 0), and ``labels`` when the items carry
        them: long [B] for classes, float32 [B] for regression (when any label is a float).
    """
    if len(batch) == 0:
        raise ValueError("cannot collate an empty batch")
    max_len = max(len(item["input_ids"]) for item in batch)
    bsz = len(batch)
    input_ids = torch.full((bsz, max_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((bsz, max_len), dtype=torch.long)
    token_type_ids = torch.zeros((bsz, max_len), dtype=torch.long)
    for i, item in enumerate(batch):
        n = len(item["input_ids"])
        input_ids[i, :n] = torch.as_tensor(item["input_ids"], dtype=torch.long)
        attention_mask[i, :n] = 1
        types = item.get("token_type_ids")
        if types is not None:
            token_type_ids[i, :n] = torch.as_tensor(types, dtype=torch.long)
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
    if "labels" in batch[0]:
        labels = [item["labels"] for item in batch]
        # Class indices -> long; any float score (STS-B, also numpy floats) -> float32 for regression.
        values = torch.tensor(labels)
        out["labels"] = values.float() if values.is_floating_point() else values.long()
    return out


def make_collate(pad_id: int) -> Callable[[Sequence[dict[str, Any]]], dict[str, torch.Tensor]]:
    """``collate`` with ``pad_id`` bound, for ``DataLoader(collate_fn=...)``; picklable, unlike a lambda, so
    it also works with worker processes."""
    return functools.partial(collate, pad_id=pad_id)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of examples of similar length, to waste little compute on padding.

    Indices are shuffled (when ``shuffle``), cut into pools of ``batch_size * pool_factor`` examples, each
    pool sorted by length and cut into batches; the batches are then shuffled again, so that batch order
    carries no length trend. Deterministic for a given ``seed`` and epoch (call :meth:`set_epoch`).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        pool_factor: int = 50,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.pool_size = batch_size * max(1, pool_factor)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle for a new epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.lengths)
        order = torch.randperm(n, generator=gen).tolist() if self.shuffle else list(range(n))
        batches: list[list[int]] = []
        for start in range(0, n, self.pool_size):
            pool = sorted(order[start : start + self.pool_size], key=self.lengths.__getitem__)
            for b in range(0, len(pool), self.batch_size):
                batch = pool[b : b + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=gen).tolist()
            batches = [batches[i] for i in perm]
        yield from batches

    def __len__(self) -> int:
        n = len(self.lengths)
        if not self.drop_last:
            full_pools, rest = divmod(n, self.pool_size)
            per_pool = -(-self.pool_size // self.batch_size)
            return full_pools * per_pool + -(-rest // self.batch_size)
        full_pools, rest = divmod(n, self.pool_size)
        return full_pools * (self.pool_size // self.batch_size) + rest // self.batch_size


def pad_sequences(
    input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]] | None = None, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, token_type_ids) [B, T] of unpadded id lists, right-padded like `collate`:
    the positional form the model's forward and `early_exit` take."""
    if token_type_ids is None:
        token_type_ids = [[0] * len(ids) for ids in input_ids]
    items = [
        {"input_ids": [int(i) for i in ids], "token_type_ids": [int(t) for t in types]}
        for ids, types in zip(input_ids, token_type_ids, strict=True)
    ]
    batch = collate(items, pad_id)
    return batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
