"""The int8 token table (embedding_bits=8): symmetric per-row codes, a straight-through gradient, exact values."""

from __future__ import annotations

import pytest
import torch

from beexformer.accounting import size_report
from beexformer.config import BEExformerConfig
from beexformer.errors import ConfigError
from beexformer.layers.embedding import BinaryEmbedding, int8_rows
from beexformer.model import BEExformer


def test_codes_are_integers_that_reach_127_and_round_to_nearest():
    rows = torch.tensor([[0.25, -1.0, 0.26, 0.0], [2.0, 1.0, -0.999, 0.004]])
    codes, scale = int8_rows(rows)
    assert torch.equal(codes, codes.round()) and codes.abs().max() == 127
    assert torch.equal(codes.abs().amax(dim=-1), torch.tensor([127.0, 127.0]))
    assert torch.allclose(scale[:, 0], torch.tensor([1.0, 2.0]) / 127)
    assert ((codes * scale - rows).abs() <= scale / 2 + 1e-7).all()
    assert codes[0].tolist() == [32.0, -127.0, 33.0, 0.0]  # 31.75 and 33.02 round to the nearest code


def test_a_zero_row_gives_zeros_not_nan():
    codes, scale = int8_rows(torch.zeros(2, 8))
    assert torch.equal(codes * scale, torch.zeros(2, 8))


def test_forward_is_codes_times_scale_and_the_gradient_passes_straight_through():
    torch.manual_seed(0)
    emb = BinaryEmbedding(50, 16, bits=8, output_scale=4.0)
    ids = torch.tensor([[3, 7, 7, 49]])
    out = emb(ids)
    codes, scale = int8_rows(emb.weight.detach()[ids], 4.0)
    assert torch.equal(out, codes * scale)  # bit for bit: the packed runtime computes codes * scale
    grad = torch.randn_like(out)
    out.backward(grad)
    expected = torch.zeros_like(emb.weight)
    expected.index_add_(0, ids[0], 4.0 * grad[0])
    assert torch.allclose(emb.weight.grad, expected)


def test_int8_table_is_close_to_float_and_weighs_a_quarter():
    torch.manual_seed(0)
    config = BEExformerConfig(vocab_size=300, d_model=32, d_ff=48, n_heads=4, n_blocks=2, embedding_bits=8)
    model = BEExformer(config)
    table = model.embeddings.token.weight.detach()
    quantized = model.embeddings.token.twin_weight()
    assert torch.nn.functional.cosine_similarity(table, quantized, dim=-1).min() > 0.999
    report = size_report(model)
    assert report.int8_params == 300 * 32
    row = next(r for r in report.rows if r.name == "embeddings.token")
    assert row.packed_bits == 8 * 300 * 32 + 32 * 300  # codes and one scale per row


def test_other_widths_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="embedding_bits=4: must be 1, 8 or 32"):
        BEExformerConfig(embedding_bits=4).validate()
