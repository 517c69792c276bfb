"""Tokenization for the packed runtime, without torch.

This class reproduces `TextEncoder.encode_texts` exactly (same ``[CLS] a [SEP] b [SEP]`` layout, segment ids
and longest-first truncation; `tests/engine/test_runtime.py::test_export_file_round_trip` checks the two
agree) on the tokenizer the packed file carries.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

from beexformer.data.tokenizer import truncate_pair
from beexformer.errors import CheckpointError, ConfigError


class PackedTokenizer:
    def __init__(self, tokenizer_json: str, special: dict | None = None) -> None:
        special = special or {}
        try:
            tok = Tokenizer.from_str(tokenizer_json)
        except Exception as err:  # the Rust side raises a bare Exception
            raise CheckpointError(f"the embedded tokenizer cannot be read ({str(err).splitlines()[0]})") from None
        tok.no_truncation()
        tok.no_padding()
        self.tokenizer = tok
        ids = {}
        for role, default in (("cls_token", "[CLS]"), ("sep_token", "[SEP]")):
            token = special.get(role) or default
            token_id = tok.token_to_id(token)
            if token_id is None:
                raise CheckpointError(f"the embedded tokenizer has no {role} {token!r}")
            ids[role] = token_id
        self.cls_id, self.sep_id = ids["cls_token"], ids["sep_token"]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        return [enc.ids for enc in encode(texts, add_special_tokens=False)]

    def encode(
        self, texts_a: Sequence[str], texts_b: Sequence[str | None] | None, max_length: int
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and segment ids per example, at most `max_length` tokens (special tokens included)."""
        if texts_b is not None and len(texts_b) != len(texts_a):
            raise ConfigError(f"{len(texts_a)} first sentences but {len(texts_b)} second sentences")
        has_pair = texts_b is not None and any(b is not None for b in texts_b)
        if max_length < (3 if has_pair else 2):
            raise ConfigError(f"max_length={max_length} leaves no room for [CLS] and [SEP]")
        ids_a = self._ids(list(texts_a))
        ids_b: list[list[int] | None] = [None] * len(ids_a)
        if has_pair:
            assert texts_b is not None
            pair_idx = [i for i, b in enumerate(texts_b) if b is not None]
            for i, ids in zip(pair_idx, self._ids([texts_b[i] for i in pair_idx]), strict=True):  # type: ignore[misc]
                ids_b[i] = ids
        input_ids, segments = [], []
        for a, b in zip(ids_a, ids_b, strict=True):
            if b is None:
                a = a[: max_length - 2]
                input_ids.append([self.cls_id, *a, self.sep_id])
                segments.append([0] * (len(a) + 2))
            else:
                na, nb = truncate_pair(len(a), len(b), max_length - 3)
                input_ids.append([self.cls_id, *a[:na], self.sep_id, *b[:nb], self.sep_id])
                segments.append([0] * (na + 2) + [1] * (nb + 1))
        return input_ids, segments
