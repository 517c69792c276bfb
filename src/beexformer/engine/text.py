"""Tokenization for the packed runtime, without torch.

The layout (``[CLS] a [SEP] b [SEP]``, segment ids, longest-first truncation) is `data.tokenizer.encode_layout`,
the very function `TextEncoder` uses; this class only reads the tokenizer the packed file carries and finds
its special tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer

from beexformer.data.tokenizer import encode_layout
from beexformer.errors import CheckpointError


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

    def encode(
        self, texts_a: Sequence[str], texts_b: Sequence[str | None] | None, max_length: int
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and segment ids per example, at most `max_length` tokens (special tokens included)."""
        batch = encode_layout(self.tokenizer, self.cls_id, self.sep_id, texts_a, texts_b, max_length)
        return batch.input_ids, batch.token_type_ids
