"""EncodedDataset, dynamic padding, and the length-bucketing sampler."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import DataLoader

from beexformer.data.collate import BucketBatchSampler, EncodedDataset, collate, make_collate
from beexformer.data.tokenizer import EncodedBatch


def _dataset(labels: list | None) -> EncodedDataset:
    ids = [[2, 10, 11, 3], [2, 12, 3, 13, 14, 3], [2, 3]]
    types = [[0, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0]]
    return EncodedDataset(ids, types, labels)


def test_collate_pads_to_longest() -> None:
    ds = _dataset([1, 0, 1])
    out = collate([ds[0], ds[1], ds[2]], pad_id=7)
    assert out["input_ids"].tolist() == [[2, 10, 11, 3, 7, 7], [2, 12, 3, 13, 14, 3], [2, 3, 7, 7, 7, 7]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]]
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]]
    assert out["labels"].tolist() == [1, 0, 1]
    for key in ("input_ids", "attention_mask", "token_type_ids", "labels"):
        assert out[key].dtype == torch.long, key


def test_collate_regression_labels_are_float() -> None:
    ds = _dataset([5.0, 2.5, 0.0])
    out = collate([ds[0], ds[2]], pad_id=0)
    assert out["labels"].dtype == torch.float32
    assert out["labels"].tolist() == [5.0, 0.0]
    assert out["input_ids"].shape == (2, 4)


def test_unlabeled_dataset_has_no_labels_key() -> None:
    for labels in (None, [None, None, None]):
        ds = _dataset(labels)
        assert "labels" not in ds[0]
        assert "labels" not in collate([ds[0], ds[1]], pad_id=0)


def test_dataset_checks_lengths() -> None:
    with pytest.raises(ValueError, match="3 input_ids but 2 labels"):
        _dataset([1, 0])
    with pytest.raises(ValueError, match="some labels are None"):
        _dataset([1, None, 0])


def test_from_encoded_and_dataloader() -> None:
    enc = EncodedBatch([[2, 5, 3], [2, 6, 7, 3]], [[0, 0, 0], [0, 0, 1, 1]], n_truncated=0)
    ds = EncodedDataset.from_encoded(enc, [0, 1])
    assert len(ds) == 2 and ds.lengths == [3, 4]
    loader = DataLoader(ds, batch_size=2, collate_fn=make_collate(0))
    (batch,) = list(loader)
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0], [2, 6, 7, 3]]
    pickle.dumps(make_collate(0))  # usable with worker processes


def test_bucket_sampler_covers_all_and_groups_lengths() -> None:
    lengths = [(i * 37) % 101 for i in range(1000)]
    sampler = BucketBatchSampler(lengths, batch_size=16, pool_factor=10, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    # Within a batch the lengths are close: mean spread far below that of random batches.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 20
    # Deterministic per epoch, different across epochs.
    assert list(BucketBatchSampler(lengths, 16, pool_factor=10, seed=3)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_bucket_sampler_drop_last_and_len() -> None:
    for n, bs, pf, drop in [(100, 8, 2, False), (100, 8, 2, True), (7, 3, 50, False), (7, 3, 50, True)]:
        sampler = BucketBatchSampler(list(range(n)), bs, pool_factor=pf, drop_last=drop, shuffle=False)
        batches = list(sampler)
        assert len(batches) == len(sampler), (n, bs, pf, drop)
        if drop:
            assert all(len(b) == bs for b in batches)


def test_numpy_labels() -> None:
    import numpy as np

    ds = _dataset(list(np.array([1.5, 2.0, 0.0])))
    assert collate([ds[0], ds[1]], 0)["labels"].dtype == torch.float32
    ds = _dataset(list(np.array([1, 0, 2])))
    assert collate([ds[0], ds[1]], 0)["labels"].dtype == torch.long
