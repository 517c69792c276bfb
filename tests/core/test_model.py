import dataclasses

import numpy as np
import pytest
import torch

from beexformer.accounting import expected_cost, ops_per_sample, size_report
from beexformer.config import BEExformerConfig
from beexformer.errors import CheckpointError, ConfigError
from beexformer.exits import AbsoluteEntropy, FractionalEntropy, entropy
from beexformer.loss import routing_weights, soft_routing_loss
from beexformer.model import BEExformer

TINY = BEExformerConfig(vocab_size=60, max_len=32, d_model=32, n_heads=2, d_ff=64, n_blocks=4, exit_hidden=16)


def tiny(**changes) -> BEExformer:
    torch.manual_seed(0)
    return BEExformer(dataclasses.replace(TINY, **changes)).eval()


def random_batch(n=12, t=10, vocab=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, t), generator=g)
    lengths = torch.randint(3, t + 1, (n,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    types = (torch.arange(t)[None, :] >= (lengths[:, None] // 2)).long() * mask
    return ids, mask, types


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"act_bits": 1},
        {"norm": "pre"},
        {"combine": "concat", "position": "learned"},
        {"ffn": "ffn", "share_weights": True},
        {"n_classes": 1},
    ],
)
def test_forward_shapes_and_loss(changes):
    model = tiny(**changes)
    ids, mask, types = random_batch()
    k = model.config.n_classes
    labels = torch.rand(len(ids)) if k == 1 else torch.randint(0, k, (len(ids),))
    out = model(ids, mask, types, labels=labels)
    assert out.exit_logits.shape == (TINY.n_blocks, len(ids), k)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.exits.parameters())


def test_padding_does_not_change_a_sample():
    model = tiny(act_bits=1)
    ids, mask, types = random_batch()
    batched = model(ids, mask, types).exit_logits
    for i in range(len(ids)):
        n = int(mask[i].sum())
        alone = model(ids[i : i + 1, :n], mask[i : i + 1, :n], types[i : i + 1, :n]).exit_logits
        assert torch.allclose(batched[:, i], alone[:, 0], atol=1e-5)


def _rule_with_varied_exits(model, ids, mask, types):
    """An absolute-entropy threshold at the median entropy of the first exit, so that about half the samples
    leave at block 1 and the rest later."""
    logits = model(ids, mask, types).exit_logits.detach().numpy()
    return AbsoluteEntropy(tau=float(np.median(entropy(logits[0]))))


def test_early_exit_batch_equals_each_sample_alone():
    model = tiny(act_bits=1)
    ids, mask, types = random_batch(n=16)
    rule = _rule_with_varied_exits(model, ids, mask, types)
    batch = model.early_exit(ids, mask, types, rule)
    assert len(set(batch.exit_block.tolist())) > 1, "test needs samples leaving at different blocks"
    for i in range(len(ids)):
        alone = model.early_exit(ids[i : i + 1], mask[i : i + 1], types[i : i + 1], rule)
        assert alone.exit_block[0] == batch.exit_block[i]
        assert alone.predictions[0] == batch.predictions[i]
        assert np.allclose(alone.logits[0], batch.logits[i], atol=1e-5)


def test_early_exit_agrees_with_offline_decision_on_full_logits():
    model = tiny()
    ids, mask, types = random_batch(n=16, seed=3)
    full = model(ids, mask, types).exit_logits.detach().numpy().transpose(1, 0, 2)
    for rule in (_rule_with_varied_exits(model, ids, mask, types), FractionalEntropy(0.05)):
        online = model.early_exit(ids, mask, types, rule)
        offline = rule.decide(full)
        assert online.exit_block.tolist() == offline.exit_block.tolist()
        assert np.allclose(online.logits, offline.logits, atol=1e-5)


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = tiny(act_bits=1, n_classes=3)
    ids, mask, types = random_batch()
    model.save_pretrained(tmp_path / "m")
    loaded = BEExformer.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    assert torch.equal(loaded(ids, mask, types).exit_logits, model(ids, mask, types).exit_logits)


def test_loading_bad_checkpoints_gives_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        BEExformer.from_pretrained(tmp_path)
    tiny().save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        BEExformer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        BEExformer.from_pretrained(tmp_path)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="act_bits"):
        BEExformerConfig(act_bits=3).validate()
    with pytest.raises(ConfigError, match="norm"):
        BEExformerConfig(norm="sandwich").validate()
    with pytest.raises(ConfigError, match="unknown config fields: colour"):
        BEExformerConfig.from_dict({"colour": 1})


def test_float_twin_uses_effective_weights():
    model = tiny()  # W1A32: the twin computes exactly the same function in float
    ids, mask, types = random_batch()
    twin = model.float_twin()
    assert twin.config.weight_bits == 32 and twin.config.embedding_bits == 32
    assert torch.allclose(twin(ids, mask, types).exit_logits, model(ids, mask, types).exit_logits, atol=1e-5)


def test_routing_weights():
    logits = torch.tensor([[[0.0, 0.0]], [[3.0, 0.0]], [[9.0, 0.0]]], requires_grad=True)  # C=3, B=1
    assert torch.allclose(routing_weights(logits, "uniform")[:, 0], torch.full((3,), 1 / 3))
    assert torch.allclose(routing_weights(logits, "depth")[:, 0], torch.tensor([1 / 6, 2 / 6, 3 / 6]))
    w = routing_weights(logits, "entropy", temperature=0.5)[:, 0]
    h = torch.tensor([float(entropy(logits[c, 0].detach().numpy()[None])[0]) for c in range(3)])
    assert torch.allclose(w, torch.softmax(-h / 0.5, dim=0).float(), atol=1e-6)
    assert not w.requires_grad  # stop-gradient
    loss, _ = soft_routing_loss(logits, torch.tensor([0]), "depth")
    ce = torch.nn.functional.cross_entropy(logits[:, 0], torch.tensor([0, 0, 0]), reduction="none")
    assert torch.allclose(loss, (ce * torch.tensor([1 / 6, 2 / 6, 3 / 6])).sum())


def test_regression_loss_is_mse():
    logits = torch.tensor([[[1.0], [2.0]], [[3.0], [0.0]]])  # C=2, B=2
    loss, _ = soft_routing_loss(logits, torch.tensor([1.0, 1.0]), "uniform")
    assert loss.item() == pytest.approx(((0 + 1) / 2 + (4 + 1) / 2) / 2)


def test_overfits_64_samples_with_one_bit_weights_and_activations():
    torch.manual_seed(0)
    config = BEExformerConfig(
        vocab_size=40,
        max_len=16,
        d_model=64,
        n_heads=2,
        d_ff=128,
        n_blocks=2,
        exit_hidden=32,
        weight_bits=1,
        act_bits=1,
        embedding_bits=1,
        dropout=0.0,
    )
    model = BEExformer(config)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (64, 8), generator=g)
    labels = torch.randint(0, 2, (64,), generator=g)
    mask = torch.ones_like(ids)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(400):
        out = model(ids, mask, labels=labels)  # dropout is 0, so train mode computes the eval function
        if (out.logits.argmax(-1) == labels).all():
            break
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    accuracy = (model(ids, mask).logits.argmax(-1) == labels).float().mean().item()
    assert accuracy == 1.0


def test_default_config_is_at_least_18x_smaller_packed():
    report = size_report(BEExformer(BEExformerConfig()))
    assert report.accounted_ratio >= 18.0
    assert report.float32_bytes == 4 * sum(p.numel() for p in BEExformer(BEExformerConfig()).parameters())


def test_ops_and_expected_cost():
    config = TINY
    ops = ops_per_sample(config, 10)
    assert ops.full.bops == 0  # W1A32 has no binary ops
    w1a1 = ops_per_sample(dataclasses.replace(config, act_bits=1), 10)
    assert w1a1.full.bops == config.n_blocks * 10 * (4 * 32 * 32 + 4 * 32 * 64)
    cost = expected_cost(config, [4, 4], [10, 10])
    assert cost.saved == 0.0 and cost.histogram == [0, 0, 0, 2]
    cost = expected_cost(config, [1, 4], [10, 10])
    per = ops.up_to(1).combined
    assert cost.saved == pytest.approx(1 - (per + ops.full.combined) / (2 * ops.full.combined))


def test_sinusoidal_positions_do_not_drown_the_tokens():
    """Token vectors start at the scale of the unit-amplitude sinusoidal positions (else nothing is learned)."""
    for bits in (1, 32):
        model = BEExformer(BEExformerConfig(vocab_size=500, embedding_bits=bits))
        tokens = model.embeddings.token(torch.arange(500))
        rms = tokens.pow(2).mean().sqrt().item()
        positions = model.embeddings.positions(64)
        assert 0.5 < rms / positions.pow(2).mean().sqrt().item() < 2.0
