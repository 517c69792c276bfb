"""TextEncoder: trained WordPiece, pair layout and segment ids, longest-first truncation, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest

from beexformer.data.glue import Example, iter_texts, load_split
from beexformer.data.tokenizer import SPECIAL_TOKENS, TextEncoder, truncate_pair
from beexformer.errors import ConfigError, DataError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    texts = []
    for task, split in (("mrpc", "train"), ("rte", "train"), ("sst2", "train"), ("cola", "train")):
        texts.extend(iter_texts(load_split(task, split, FIXTURES)))
    return TextEncoder.train_wordpiece(texts, vocab_size=300, min_frequency=1)


def test_special_token_ids(encoder: TextEncoder) -> None:
    vocab = encoder.tokenizer.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (encoder.pad_id, encoder.cls_id, encoder.sep_id, encoder.unk_id) == (0, 2, 3, 1)
    assert encoder.vocab_size <= 300


def test_trained_wordpiece_lowercases_and_splits(encoder: TextEncoder) -> None:
    assert encoder.tokenize("The WITNESS") == encoder.tokenize("the witness")
    pieces = encoder.tokenize("deliberately")
    assert "".join(p.removeprefix("##") for p in pieces) == "deliberately"
    assert encoder.tokenize("\u4e2d") == ["[UNK]"]  # a character never seen in training


def test_cased_option() -> None:
    enc = TextEncoder.train_wordpiece(["Hello World", "hello world"] * 5, vocab_size=100, lowercase=False)
    assert enc.tokenize("Hello") != enc.tokenize("hello")


def test_single_sentence_layout(encoder: TextEncoder) -> None:
    batch = encoder.encode_batch([Example("the witness", None, 1)], max_length=32)
    ids = encoder.tokenizer.encode("the witness", add_special_tokens=False).ids
    assert batch.input_ids == [[encoder.cls_id, *ids, encoder.sep_id]]
    assert batch.token_type_ids == [[0] * (len(ids) + 2)]
    assert batch.n_truncated == 0


def test_pair_layout_and_segment_ids(encoder: TextEncoder) -> None:
    a = encoder.tokenizer.encode("the witness", add_special_tokens=False).ids
    b = encoder.tokenizer.encode("his brother said", add_special_tokens=False).ids
    batch = encoder.encode_batch([Example("the witness", "his brother said", 0)], max_length=64)
    cls, sep = encoder.cls_id, encoder.sep_id
    assert batch.input_ids[0] == [cls, *a, sep, *b, sep]
    assert batch.token_type_ids[0] == [0] * (len(a) + 2) + [1] * (len(b) + 1)


def test_mixed_single_and_pair(encoder: TextEncoder) -> None:
    batch = encoder.encode_batch([Example("a", None, 0), Example("a", "b", 0)], max_length=16)
    assert batch.token_type_ids[0] == [0, 0, 0]
    assert batch.token_type_ids[1] == [0, 0, 0, 1, 1]


def _longest_first_loop(la: int, lb: int, budget: int) -> tuple[int, int]:
    # The definition: remove one token at a time from the longer sequence (b on a tie).
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


def testtruncate_pair_matches_loop() -> None:
    for budget in range(0, 12):
        for la in range(0, 15):
            for lb in range(0, 15):
                assert truncate_pair(la, lb, budget) == _longest_first_loop(la, lb, budget), (la, lb, budget)


def test_truncation_and_count(encoder: TextEncoder) -> None:
    long_a = " ".join(["witness"] * 20)
    short_b = "brother"
    examples = [
        Example(long_a, short_b, 1),  # truncated: a cut, b kept
        Example("the", "brother", 0),  # fits
        Example(long_a, long_a, 1),  # truncated: both cut to half
        Example(long_a, None, 0),  # single sentence truncated
    ]
    batch = encoder.encode_batch(examples, max_length=11)
    assert batch.n_truncated == 3
    assert all(len(ids) <= 11 for ids in batch.input_ids)
    assert batch.lengths[0] == 11 and batch.lengths[3] == 11
    n_b = len(encoder.tokenizer.encode(short_b, add_special_tokens=False).ids)
    assert batch.token_type_ids[0].count(1) == n_b + 1  # b kept whole (plus its [SEP])
    # Both long: budget 8 split 4/4.
    assert batch.token_type_ids[2] == [0] * 6 + [1] * 5
    assert batch.input_ids[2][5] == encoder.sep_id and batch.input_ids[2][-1] == encoder.sep_id


def test_max_length_too_small(encoder: TextEncoder) -> None:
    with pytest.raises(ConfigError, match="max_length must be >= 3"):
        encoder.encode_batch([Example("a", "b", 0)], max_length=2)
    assert encoder.encode_batch([Example("a b c", None, 0)], max_length=2).input_ids == [[2, 3]]


def test_save_load_round_trip(encoder: TextEncoder, tmp_path: Path) -> None:
    examples = load_split("mrpc", "dev", FIXTURES)
    before = encoder.encode_batch(examples, max_length=24)
    encoder.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    for loaded in (TextEncoder.load(tmp_path / "tok"), TextEncoder.from_pretrained(tmp_path / "tok")):
        after = loaded.encode_batch(examples, max_length=24)
        assert after == before
        assert (loaded.vocab_size, loaded.pad_id, loaded.cls_id, loaded.sep_id) == (
            encoder.vocab_size,
            encoder.pad_id,
            encoder.cls_id,
            encoder.sep_id,
        )
    # A bare tokenizer.json (no text_encoder.json) is accepted too.
    bare = TextEncoder.from_pretrained(tmp_path / "tok" / "tokenizer.json")
    assert bare.encode_batch(examples, max_length=24) == before


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"tokenizer\.json: tokenizer file not found"):
        TextEncoder.load(tmp_path)


def test_hugging_face_tokenizer_by_path(encoder: TextEncoder, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    backend = encoder.tokenizer.__class__.from_str(encoder.tokenizer.to_str())
    backend.enable_truncation(4)  # a Hub tokenizer.json often enables truncation: it must be switched off
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]"
    )
    hf.save_pretrained(str(tmp_path / "hf"))
    loaded = TextEncoder.from_pretrained(str(tmp_path / "hf"))
    examples = [Example("the witness said his brother", "a patient viewer", 1)]
    assert loaded.encode_batch(examples, 64) == encoder.encode_batch(examples, 64)
    assert loaded.source == str(tmp_path / "hf")


def test_real_sst2_dev_encoding(glue_dir: Path) -> None:
    dev = load_split("sst2", "dev", glue_dir)
    enc = TextEncoder.train_wordpiece(iter_texts(dev), vocab_size=2000)
    batch = enc.encode_batch(dev, max_length=32)
    assert len(batch) == 872
    assert batch.n_truncated == sum(
        1 for ex in dev if len(enc.tokenizer.encode(ex.text_a, add_special_tokens=False).ids) > 30
    )
    assert batch.n_truncated > 0


def test_bare_tokenizers_directory(encoder: TextEncoder, tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    encoder.tokenizer.save(str(tmp_path / "bare" / "tokenizer.json"))
    loaded = TextEncoder.from_pretrained(tmp_path / "bare")
    assert (loaded.cls_id, loaded.sep_id, loaded.pad_id) == (encoder.cls_id, encoder.sep_id, encoder.pad_id)
