"""The packed runtime against the PyTorch model: all exits' logits, early-exit decisions, file round trip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from beexformer.engine.export import export_model, packed_tensors
from beexformer.engine.format import act_mode
from beexformer.engine.runtime import PackedModel
from beexformer.exits import AbsoluteEntropy, FractionalEntropy, MaxProbability, NeverExit, Patience
from beexformer.inference import PackedPredictor
from conftest import make_model, padded, random_batch

VARIANTS = {
    "w1a1": dict(act_bits=1),
    "w1a32": dict(act_bits=32),
    "w1a1-pre-ln": dict(act_bits=1, norm="pre"),
    "w1a1-ffn-learned-concat": dict(act_bits=1, ffn="ffn", position="learned", combine="concat"),
    "w1a32-shared-1bit-exits": dict(act_bits=32, share_weights=True, exit_bits=1),
    "w1a1-float-emb-d100": dict(act_bits=1, embedding_bits=32, d_model=100, n_heads=5, d_ff=70),
    "w1a1-int8-emb": dict(act_bits=1, embedding_bits=8),  # sinusoidal: output_scale sqrt(d) folded in the scale
    "float": dict(weight_bits=32, act_bits=32, embedding_bits=32),
    # BERT-family blocks (the pretrained start: learned positions, plain GELU FFN, eps 1e-12) at every width
    "w1a2-bert-cls": dict(act_bits=2, ffn="ffn", position="learned", layer_norm_eps=1e-12, pooling="cls"),
    "w1a4-bert": dict(act_bits=4, ffn="ffn", position="learned", layer_norm_eps=1e-12, d_model=96, n_heads=6),
    "w1a1-elastic-bert": dict(act_bits=1, act_binarizer="elastic", ffn="ffn", position="learned"),
    "w1a1-bert-float-emb": dict(act_bits=1, ffn="ffn", position="learned", embedding_bits=32, pooling="cls"),
    "w1a32-bert-int8-emb": dict(act_bits=32, ffn="ffn", position="learned", embedding_bits=8, pooling="cls"),
    "w1a32-bert-ffn-slfn": dict(act_bits=32, ffn="ffn_slfn", position="learned", layer_norm_eps=1e-12),
    "w1a4-slfn": dict(act_bits=4),
    "w1a2-ffn-slfn-pre-ln": dict(act_bits=2, ffn="ffn_slfn", norm="pre"),
    # input channels kept at full precision: the BERT FFN and the SLFN run unfused
    "w1a4-bert-outliers": dict(act_bits=4, ffn="ffn", position="learned", layer_norm_eps=1e-12, act_outliers=3),
    "w1a1-elastic-slfn-outliers": dict(act_bits=1, act_binarizer="elastic", act_outliers=2),
    # GELU outputs coded from GELU's minimum: the floor in the threshold, m * rowsum in the bias
    "w1a4-bert-gelu-floor": dict(act_bits=4, ffn="ffn", position="learned", act_gelu_floor=True),
    "w1a2-bert-gelu-floor-outliers": dict(
        act_bits=2, ffn="ffn", position="learned", act_gelu_floor=True, act_outliers=3
    ),
    "w1a1-elastic-bert-gelu-floor": dict(act_bits=1, act_binarizer="elastic", ffn="ffn", act_gelu_floor=True),
}
# Learned k-bit codes: where PyTorch's float32 rounding and ours differ by an ulp at a level boundary, one code
# moves by one level (as a sign flips in W1A1: docs/engine.md); the bound for logits is 1e-3.
PLANES_ATOL = 1e-3


def _atol(config) -> float:
    return PLANES_ATOL if act_mode(config) == "planes" else 1e-5


@pytest.mark.parametrize("name", list(VARIANTS))
def test_all_exits_match_pytorch(name):
    model = make_model(**VARIANTS[name])
    packed = PackedModel(model.config, packed_tensors(model), None)
    ids, segs = random_batch(9, model.config.vocab_size, model.config.max_len, pairs=True)
    with torch.no_grad():
        ref = model(*padded(ids, segs)).exit_logits.numpy()
    out = packed.run(ids, segs)
    assert out.exit_logits.shape == ref.shape
    np.testing.assert_allclose(out.exit_logits, ref, atol=_atol(model.config), rtol=0)
    assert np.array_equal(out.predictions, ref[-1].argmax(-1))


def _mixed_rules(model, ids, segs):
    """Rules whose thresholds sit inside the spread of this model's entropies, so samples leave at different
    blocks (a rule where everyone leaves together would not test the compaction)."""
    with torch.no_grad():
        logits = model(*padded(ids, segs)).exit_logits.numpy()
    from beexformer.exits import entropy, max_probability

    tau = float(np.median(entropy(logits[1])))
    conf = float(np.median(max_probability(logits[0])))
    return [
        AbsoluteEntropy(tau),
        MaxProbability(conf),
        FractionalEntropy(0.0),
        Patience(1, returns="previous"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "w1a1",
        "w1a32",
        "w1a1-pre-ln",
        "w1a2-bert-cls",
        "w1a4-bert",
        "w1a1-elastic-bert",
        "w1a2-ffn-slfn-pre-ln",
        "w1a4-bert-outliers",
    ],
)
def test_early_exit_matches_pytorch(name):
    model = make_model(seed=3, n_blocks=4, **VARIANTS[name])
    packed = PackedModel(model.config, packed_tensors(model), None)
    ids, segs = random_batch(40, model.config.vocab_size, model.config.max_len, seed=5)
    seen_blocks = set()
    for rule in _mixed_rules(model, ids, segs):
        ref = model.early_exit(*padded(ids, segs), rule)
        out = packed.run(ids, segs, rule)
        assert np.array_equal(out.exit_block, ref.exit_block), rule.describe()
        assert np.array_equal(out.predictions, ref.predictions), rule.describe()
        np.testing.assert_allclose(out.logits, ref.logits, atol=_atol(model.config), rtol=0)
        seen_blocks |= set(out.exit_block.tolist())
    assert len(seen_blocks) >= 3, "the rules should make samples leave at several different blocks"


def test_outlier_channels_change_the_packed_output_as_they_change_pytorchs():
    """The kept channels matter on both sides: without them (the same weights, C = 0) both models move, and
    by the same amount."""
    model = make_model(**VARIANTS["w1a4-bert-outliers"])
    ids, segs = random_batch(9, model.config.vocab_size, model.config.max_len)
    with_channels = PackedModel(model.config, packed_tensors(model), None).run(ids, segs).exit_logits
    for module in model.modules():
        if getattr(module, "outlier_channels", None) is not None:
            module.outlier_channels = None
    model.config.act_outliers = 0
    tensors = {k: v for k, v in packed_tensors(model).items() if not k.endswith("act_outliers")}
    without = PackedModel(model.config, tensors, None).run(ids, segs).exit_logits
    with torch.no_grad():
        ref_without = model(*padded(ids, segs)).exit_logits.numpy()
    assert np.abs(with_channels - without).max() > 0.01
    np.testing.assert_allclose(without, ref_without, atol=PLANES_ATOL, rtol=0)


def test_the_gelu_floor_changes_the_packed_output_as_it_changes_pytorchs():
    """Without the floor (the same weights and steps, levels from 0) both models move, and by the same amount:
    the equivalence above is not one of two models that ignore it."""
    model = make_model(**VARIANTS["w1a4-bert-gelu-floor"])
    ids, segs = random_batch(9, model.config.vocab_size, model.config.max_len)
    floored = PackedModel(model.config, packed_tensors(model), None).run(ids, segs).exit_logits
    for module in model.modules():
        if getattr(module, "floor", 0.0):
            module.floor = 0.0
    model.config.act_gelu_floor = False
    without = PackedModel(model.config, packed_tensors(model), None).run(ids, segs).exit_logits
    with torch.no_grad():
        ref_without = model(*padded(ids, segs)).exit_logits.numpy()
    np.testing.assert_allclose(without, ref_without, atol=PLANES_ATOL, rtol=0)
    assert np.abs(floored - without).max() > 0.01


def test_batch_of_one_equals_batch(tmp_path):
    model = make_model(act_bits=1)
    packed = PackedModel(model.config, packed_tensors(model), None)
    ids, segs = random_batch(6, model.config.vocab_size, model.config.max_len, seed=9)
    together = packed.run(ids, segs).exit_logits
    for i in range(len(ids)):
        alone = packed.run([ids[i]], [segs[i]]).exit_logits[:, 0]
        np.testing.assert_allclose(alone, together[:, i], atol=1e-6)


def test_export_file_round_trip(tmp_path, tiny_tokenizer_dir):
    tok_dir, encoder = tiny_tokenizer_dir
    model = make_model(act_bits=1, vocab_size=encoder.vocab_size)
    path = export_model(model, tok_dir, tmp_path / "model.beex")
    packed = PackedModel.load(path)
    texts = ["a fine film", "not good , tedious", "the year"]
    pairs = ["a dull film", None, "best"]
    ids, segs = packed.encode(texts, pairs)
    batch = encoder.encode_texts(texts, pairs, model.config.max_len)
    assert ids == batch.input_ids and segs == batch.token_type_ids
    out = PackedPredictor(path).predict(texts, pairs, rule=NeverExit(), batch_size=2)  # the one batching door
    with torch.no_grad():
        ref = model(*padded(batch.input_ids, batch.token_type_ids)).exit_logits[-1].numpy()
    np.testing.assert_allclose(out.logits, ref, atol=1e-5)


def test_runtime_does_not_import_torch(tmp_path, tiny_tokenizer_dir):
    tok_dir, encoder = tiny_tokenizer_dir
    path = export_model(make_model(act_bits=1, vocab_size=encoder.vocab_size), tok_dir, tmp_path / "m.beex")
    script = (
        "import sys\n"
        "from beexformer.engine import is_packed_model\n"
        "from beexformer.inference import load_predictor\n"
        "from beexformer.exits import FractionalEntropy\n"
        f"assert is_packed_model({str(path)!r})\n"
        f"m = load_predictor({str(path)!r})\n"
        "out = m.predict(['a fine film', 'a dull film'], rule=FractionalEntropy(0.05))\n"
        "assert len(out.predictions) == 2\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
