"""One text layout for every tokenizer and both runtimes: the trained WordPiece, BERT's vocab.txt and the
packed runtime's tokenizer all encode through `data.tokenizer.encode_layout`, so they cannot drift apart."""

from __future__ import annotations

import pytest

from beexformer.data.tokenizer import TextEncoder
from beexformer.engine.text import PackedTokenizer
from beexformer.pretrained import read_checkpoint

TEXTS_A = ["a good film", "not bad at all , the man is good", "", "it is a movie " * 20, "x"]
TEXTS_B = ["the movie", None, "a film", "bad " * 30, ""]


def _encoders(tiny_bert_dir):
    scratch = TextEncoder.train_wordpiece(TEXTS_A + [b for b in TEXTS_B if b] * 3, vocab_size=60, min_frequency=1)
    bert = read_checkpoint(str(tiny_bert_dir)).text_encoder()
    return {"trained WordPiece": scratch, "BERT vocab.txt": bert}


@pytest.mark.parametrize("max_length", [3, 8, 64])
@pytest.mark.parametrize("pairs", [False, True])
def test_packed_tokenizer_equals_text_encoder(tiny_bert_dir, max_length, pairs):
    texts_b = TEXTS_B if pairs else None
    for name, encoder in _encoders(tiny_bert_dir).items():
        packed = PackedTokenizer(encoder.tokenizer.to_str(), {"cls_token": "[CLS]", "sep_token": "[SEP]"})
        ref = encoder.encode_texts(TEXTS_A, texts_b, max_length)
        ids, segs = packed.encode(TEXTS_A, texts_b, max_length)
        assert (ids, segs) == (ref.input_ids, ref.token_type_ids), name
        cls_id, sep_id = encoder.cls_id, encoder.sep_id
        for row, seg, b in zip(ids, segs, texts_b or [None] * len(ids), strict=True):
            assert row[0] == cls_id and row[-1] == sep_id and len(row) <= max_length, name
            first_sep = row.index(sep_id)
            assert seg == [0] * (first_sep + 1) + [1] * (len(row) - first_sep - 1), name
            assert (row.count(sep_id) == 2) == (b is not None), name
