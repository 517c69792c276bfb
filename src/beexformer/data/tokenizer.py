"""Text encoding: a small WordPiece tokenizer trained on the task's own text, or any Hugging Face tokenizer.

Every encoder builds the same BERT-style layout, whatever the tokenizer's own post-processing:
``[CLS] a [SEP]`` for one sentence and ``[CLS] a [SEP] b [SEP]`` for a pair, with segment (token type) ids
0 for ``[CLS] a [SEP]`` and 1 for ``b [SEP]`` (docs/design.md section 2). For a pretrained tokenizer without
``[CLS]``/``[SEP]`` (GPT-2, Llama, ...) its BOS/EOS tokens take their place.

Over-long inputs are truncated "longest first" (as in Hugging Face): tokens are removed one at a time from
the end of the longer sentence, from ``b`` on a tie, until the pair fits. :class:`EncodedBatch` reports how
many examples were truncated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from beexformer.errors import ConfigError, DataError

if TYPE_CHECKING:
    from beexformer.data.glue import Example

__all__ = [
    "TextEncoder",
    "EncodedBatch",
    "encode_layout",
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "ENCODER_CONFIG_FILE",
]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4 in a trained WordPiece
TOKENIZER_FILE = "tokenizer.json"
ENCODER_CONFIG_FILE = "text_encoder.json"


@dataclass
class EncodedBatch:
    """Encoded examples: one list of token ids and one of segment ids per example."""

    input_ids: list[list[int]] = field(default_factory=list)
    token_type_ids: list[list[int]] = field(default_factory=list)
    n_truncated: int = 0  # examples that were longer than max_length and were cut

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        """Token count of every example."""
        return [len(ids) for ids in self.input_ids]


def truncate_pair(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Lengths of a and b after longest-first truncation to ``la + lb <= budget``.

    Closed form of the one-token-at-a-time loop (trim the longer, ``b`` on a tie): if the shorter one fits
    in half the budget it is kept whole and the longer gets the rest; otherwise both end up at half the
    budget, ``a`` getting the odd token.
    """
    if la + lb <= budget:
        return la, lb
    short = min(la, lb)
    if 2 * short <= budget:
        return (la, budget - la) if la < lb else (budget - lb, lb)
    return (budget + 1) // 2, budget // 2


def token_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Word-piece ids of each text, without special tokens."""
    # encode_batch_fast skips offset tracking (tokenizers >= 0.20); both run in parallel in Rust.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    return [enc.ids for enc in encode(texts, add_special_tokens=False)]


def encode_layout(
    tokenizer: Tokenizer,
    cls_id: int,
    sep_id: int,
    texts_a: Sequence[str],
    texts_b: Sequence[str | None] | None,
    max_length: int,
) -> EncodedBatch:
    """THE text layout, for every tokenizer and both runtimes (the PyTorch `TextEncoder`, from scratch or
    BERT's vocab.txt, and the packed runtime's `engine.text.PackedTokenizer`): ``[CLS] a [SEP]`` or
    ``[CLS] a [SEP] b [SEP]`` (a ``None`` in ``texts_b`` = no pair), token types 0 up to the first ``[SEP]``
    and 1 after, at most ``max_length`` tokens with longest-first truncation."""
    if texts_b is not None and len(texts_b) != len(texts_a):
        raise ConfigError(f"{len(texts_a)} first sentences but {len(texts_b)} second sentences")
    has_pair = texts_b is not None and any(b is not None for b in texts_b)
    min_len = 3 if has_pair else 2
    if max_length < min_len:
        raise ConfigError(f"max_length must be >= {min_len} (room for [CLS] and [SEP]), got {max_length}")
    ids_a = token_ids(tokenizer, list(texts_a))
    ids_b: list[list[int] | None] = [None] * len(ids_a)
    if has_pair:
        assert texts_b is not None
        pair_idx = [i for i, b in enumerate(texts_b) if b is not None]
        for i, ids in zip(pair_idx, token_ids(tokenizer, [str(texts_b[i]) for i in pair_idx]), strict=True):
            ids_b[i] = ids
    out = EncodedBatch()
    for a, b in zip(ids_a, ids_b, strict=True):
        if b is None:
            budget = max_length - 2
            if len(a) > budget:
                out.n_truncated += 1
                a = a[:budget]
            out.input_ids.append([cls_id, *a, sep_id])
            out.token_type_ids.append([0] * (len(a) + 2))
        else:
            na, nb = truncate_pair(len(a), len(b), max_length - 3)
            if na < len(a) or nb < len(b):
                out.n_truncated += 1
            out.input_ids.append([cls_id, *a[:na], sep_id, *b[:nb], sep_id])
            out.token_type_ids.append([0] * (na + 2) + [1] * (nb + 1))
    return out


class TextEncoder:
    """Wraps a ``tokenizers.Tokenizer`` and encodes GLUE examples into ids and segment ids."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        unk_token: str | None = "[UNK]",
        source: str = "wordpiece",
    ) -> None:
        # Work on a private copy with truncation and padding switched off: a tokenizer.json from the Hub
        # often enables them, and this class does its own truncation and leaves padding to collate().
        tok = Tokenizer.from_str(tokenizer.to_str())
        tok.no_truncation()
        tok.no_padding()
        self.tokenizer = tok
        self.cls_token, self.sep_token = cls_token, sep_token
        self.pad_token, self.unk_token = pad_token, unk_token
        self.source = source
        ids = {}
        for role, token in (("cls", cls_token), ("sep", sep_token), ("pad", pad_token)):
            token_id = tok.token_to_id(token)
            if token_id is None:
                raise ConfigError(f"tokenizer has no {role} token {token!r} in its vocabulary")
            ids[role] = token_id
        self._cls_id, self._sep_id, self._pad_id = ids["cls"], ids["sep"], ids["pad"]

    # ----------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def train_wordpiece(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        lowercase: bool = True,
        *,
        min_frequency: int = 2,
    ) -> TextEncoder:
        """Train a BERT-style WordPiece tokenizer on ``texts`` (no download).

        Special tokens get ids ``[PAD]``=0, ``[UNK]``=1, ``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4. The
        normalizer is BERT's (accents stripped when lowercasing); words are split on whitespace and
        punctuation; continuation pieces start with ``##``.
        """
        if vocab_size < len(SPECIAL_TOKENS) + 1:
            raise ConfigError(f"vocab_size must be > {len(SPECIAL_TOKENS)}, got {vocab_size}")
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            # As BERT: rare characters become [UNK] instead of crowding a small vocabulary.
            limit_alphabet=1000,
            continuing_subword_prefix="##",
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        # The trainer picks the same pieces every run but numbers them in hash-map order, which differs
        # from process to process: renumber them (special tokens first, then sorted) so that the same
        # data and seed give the same ids, embeddings and results.
        learned = sorted(set(tok.get_vocab()) - set(SPECIAL_TOKENS))
        vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *learned])}
        tok.model = models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##")
        return cls(tok, source="wordpiece")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str]) -> TextEncoder:
        """Load a saved encoder directory, a ``tokenizer.json`` file, or a Hugging Face tokenizer (name/path).

        Hugging Face tokenizers need ``transformers`` and a fast (Rust) tokenizer; a name needs the network
        or the Hugging Face cache.
        """
        path = Path(name_or_path).expanduser()
        if path.is_dir() and (path / ENCODER_CONFIG_FILE).is_file():
            return cls.load(path)
        if path.is_dir() and (path / TOKENIZER_FILE).is_file() and not (path / "tokenizer_config.json").exists():
            # A bare tokenizers directory (no Hugging Face config): no need for transformers.
            return cls.load(path)
        if path.is_file() and path.suffix == ".json":
            return cls._from_bare_tokenizer(Tokenizer.from_file(str(path)), str(path))
        try:
            from transformers import AutoTokenizer  # lazy: heavy, and optional
        except ImportError:
            raise ConfigError(
                f"{name_or_path}: loading a Hugging Face tokenizer needs transformers (pip install 'beexformer[hf]')"
            ) from None
        try:
            hf = AutoTokenizer.from_pretrained(str(name_or_path))
        except Exception as err:  # hub, network and file errors come in many types
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(f"{name_or_path}: cannot load tokenizer ({first})") from err
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(f"{name_or_path}: only fast (Rust-backed) Hugging Face tokenizers are usable")
        cls_token = hf.cls_token or hf.bos_token
        sep_token = hf.sep_token or hf.eos_token
        if cls_token is None or sep_token is None:
            raise ConfigError(f"{name_or_path}: tokenizer has neither [CLS]/[SEP] nor BOS/EOS tokens")
        # Padding positions are masked out, so any id works when the tokenizer has no pad token.
        pad_token = hf.pad_token or sep_token
        return cls(
            backend,
            cls_token=str(cls_token),
            sep_token=str(sep_token),
            pad_token=str(pad_token),
            unk_token=None if hf.unk_token is None else str(hf.unk_token),
            source=str(name_or_path),
        )

    @classmethod
    def _from_bare_tokenizer(cls, tok: Tokenizer, where: str) -> TextEncoder:
        """A ``tokenizer.json`` without our config: find the BERT special tokens, or BOS/EOS-like ones."""
        vocab = tok.get_vocab(with_added_tokens=True)

        def first(*candidates: str) -> str | None:
            return next((c for c in candidates if c in vocab), None)

        cls_token = first("[CLS]", "<s>", "<|begin_of_text|>", "<|endoftext|>")
        sep_token = first("[SEP]", "</s>", "<|end_of_text|>", "<|endoftext|>")
        if cls_token is None or sep_token is None:
            raise ConfigError(f"{where}: cannot find [CLS]/[SEP] (or <s>/</s>) tokens in this tokenizer")
        pad_token = first("[PAD]", "<pad>") or sep_token
        return cls(tok, cls_token=cls_token, sep_token=sep_token, pad_token=pad_token,
                   unk_token=first("[UNK]", "<unk>"), source=where)  # fmt: skip

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` and ``text_encoder.json`` (special tokens) into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(out / TOKENIZER_FILE))
        config = {
            "cls_token": self.cls_token,
            "sep_token": self.sep_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
            "source": self.source,
        }
        (out / ENCODER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TextEncoder:
        """Load an encoder written by :meth:`save` (a bare ``tokenizer.json`` is accepted too)."""
        root = Path(directory)
        tok_path = root / TOKENIZER_FILE
        if not tok_path.is_file():
            raise DataError(f"{tok_path}: tokenizer file not found (expected a directory written by save())")
        try:
            tok = Tokenizer.from_file(str(tok_path))
        except Exception as err:  # the Rust side raises a bare Exception on a corrupt file
            raise DataError(f"{tok_path}: cannot read tokenizer ({str(err).splitlines()[0]})") from err
        cfg_path = root / ENCODER_CONFIG_FILE
        if not cfg_path.is_file():
            return cls._from_bare_tokenizer(tok, str(tok_path))
        try:
            cfg: dict[str, Any] = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise DataError(f"{cfg_path}: not valid JSON ({err})") from err
        return cls(
            tok,
            cls_token=cfg.get("cls_token", "[CLS]"),
            sep_token=cfg.get("sep_token", "[SEP]"),
            pad_token=cfg.get("pad_token", "[PAD]"),
            unk_token=cfg.get("unk_token", "[UNK]"),
            source=cfg.get("source", "wordpiece"),
        )

    # ----------------------------------------------------------------------------------------------
    # Properties

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (the size of the embedding table)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def cls_id(self) -> int:
        return self._cls_id

    @property
    def sep_id(self) -> int:
        return self._sep_id

    @property
    def unk_id(self) -> int | None:
        return None if self.unk_token is None else self.tokenizer.token_to_id(self.unk_token)

    # ----------------------------------------------------------------------------------------------
    # Encoding

    def encode_texts(
        self, texts_a: Sequence[str], texts_b: Sequence[str | None] | None, max_length: int
    ) -> EncodedBatch:
        """Encode sentences (``texts_b`` None) or pairs (a ``None`` entry in ``texts_b`` = no pair)."""
        return encode_layout(self.tokenizer, self._cls_id, self._sep_id, texts_a, texts_b, max_length)

    def encode_batch(self, examples: Sequence[Example], max_length: int) -> EncodedBatch:
        """Encode examples as ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with segment ids 0/1.

        Inputs longer than ``max_length`` tokens (special tokens included) are truncated longest-first;
        ``n_truncated`` counts them.
        """
        texts_b = [ex.text_b for ex in examples]
        return self.encode_texts([ex.text_a for ex in examples], texts_b, max_length)

    def tokenize(self, text: str) -> list[str]:
        """The word pieces of ``text`` (no special tokens), for inspection."""
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text back from ids (lowercased and re-spaced for the trained WordPiece)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def __repr__(self) -> str:
        return f"TextEncoder(source={self.source!r}, vocab_size={self.vocab_size})"
