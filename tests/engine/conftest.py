"""Helpers for the engine tests: small PyTorch BEExformers and their packed twins."""

from __future__ import annotations

import numpy as np
import pytest

from beexformer.data.collate import pad_sequences as padded  # noqa: F401 - used by the tests


def make_model(seed: int = 0, **overrides):
    """A small BEExformer with non-trivial weights (LayerNorm and biases moved away from their init)."""
    import torch

    from beexformer.config import BEExformerConfig
    from beexformer.model import BEExformer

    torch.manual_seed(seed)
    base = dict(d_model=64, d_ff=96, n_heads=4, n_blocks=3, vocab_size=200, max_len=48, exit_hidden=16)
    base.update(overrides)
    model = BEExformer(BEExformerConfig(**base))
    if model.config.act_bits != 32:
        # Learned activation quantizers set their step from the first batch they see (LSQ's rule).
        ids, segs = random_batch(8, model.config.vocab_size, model.config.max_len, seed=seed)
        with torch.no_grad():
            model.eval()(*padded(ids, segs))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def random_batch(n: int, vocab: int, max_len: int, seed: int = 0, pairs: bool = False):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_len + 1, n)
    ids = [rng.integers(0, vocab, int(length)) for length in lengths]
    segs = []
    for length in lengths:
        cut = int(rng.integers(1, length + 1)) if pairs else int(length)
        segs.append(np.array([0] * cut + [1] * (int(length) - cut), dtype=np.int64))
    return ids, segs


@pytest.fixture
def tiny_tokenizer_dir(tmp_path):
    """A small trained WordPiece (the data package's TextEncoder), saved like a run's tokenizer."""
    from beexformer.data.tokenizer import TextEncoder

    texts = ["a fine film", "a dull , tedious film", "the best movie of the year", "not good at all"] * 20
    encoder = TextEncoder.train_wordpiece(texts, vocab_size=120, min_frequency=1)
    return encoder.save(tmp_path / "tokenizer"), encoder
