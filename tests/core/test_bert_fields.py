"""Config fields of the pretrained (BERT-family) start: old configs load unchanged, the gated SLFN branch is a
pass-through at step 0 that still learns, [CLS] pooling reads the first token."""

import dataclasses

import pytest
import torch

from beexformer.config import BEExformerConfig
from beexformer.errors import ConfigError
from beexformer.layers.exit_head import pool
from beexformer.model import BEExformer

BERTISH = BEExformerConfig(
    vocab_size=60, max_len=40, d_model=32, n_heads=2, d_ff=64, n_blocks=3, exit_hidden=16,
    position="learned", ffn="ffn", layer_norm_eps=1e-12, weight_bits=32, embedding_bits=32, dropout=0.0,
)  # fmt: skip
NEW_FIELDS = ("ffn_activation", "pooling", "tokenizer_kind", "lowercase")


def batch(n=6, t=9, vocab=60):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (n, t), generator=g)
    mask = (torch.arange(t)[None, :] < torch.randint(3, t + 1, (n,), generator=g)[:, None]).long()
    return ids * mask, mask, torch.zeros_like(ids)


def test_a_config_saved_before_the_new_fields_loads_with_the_old_behaviour(tmp_path):
    old = {k: v for k, v in BEExformerConfig().to_dict().items() if k not in NEW_FIELDS}
    loaded = BEExformerConfig.from_dict(old)
    assert (loaded.ffn, loaded.pooling, loaded.ffn_activation) == ("slfn", "mean", "gelu")
    assert loaded == BEExformerConfig()


def test_new_fields_are_validated():
    for field, bad in (("ffn", "moe"), ("ffn_activation", "swish"), ("pooling", "max"), ("tokenizer_kind", "bpe")):
        with pytest.raises(ConfigError, match=field):
            dataclasses.replace(BEExformerConfig(), **{field: bad}).validate()
    with pytest.raises(ConfigError, match="layer_norm_eps"):
        BEExformerConfig(layer_norm_eps=0.0).validate()


@pytest.mark.parametrize("bits", [32, 1])
def test_gated_slfn_branch_is_a_pass_through_at_init_and_its_gate_learns(bits):
    plain_cfg = dataclasses.replace(BERTISH, weight_bits=bits)
    torch.manual_seed(0)
    plain = BEExformer(plain_cfg).eval()
    gated = BEExformer(dataclasses.replace(plain_cfg, ffn="ffn_slfn")).eval()
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".ffn.slfn" in name for name in missing)
    ids, mask, types = batch()
    assert torch.equal(gated(ids, mask, types).exit_logits, plain(ids, mask, types).exit_logits)
    gated.train()
    gated(ids, mask, types, labels=torch.tensor([0, 1, 0, 1, 1, 0])).loss.backward()
    assert all(block.ffn.slfn_gate.grad.abs().sum() > 0 for block in gated.blocks)


def test_cls_pooling_reads_the_first_token_and_mean_pooling_the_real_tokens():
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert torch.equal(pool(x, mask, "cls"), x[:, 0])
    assert torch.allclose(pool(x, mask, "mean")[0], x[0, :2].mean(0))
    model = BEExformer(dataclasses.replace(BERTISH, pooling="cls")).eval()
    ids, mask, types = batch()
    with torch.no_grad():
        hidden = model.embeddings(ids, types)
        hidden = model.blocks[0](hidden, mask)
        expected = model.exits[0].fc2(model.exits[0].act(model.exits[0].fc1(hidden[:, 0])))
    assert torch.allclose(model(ids, mask, types).exit_logits[0], expected, atol=1e-6)
