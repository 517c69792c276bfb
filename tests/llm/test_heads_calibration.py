"""Exit heads (save/load, training), calibration on a hand-made table, and the KV-copy fill."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from beexformer.errors import CheckpointError, ConfigError
from beexformer.llm.adapters import adapter_for
from beexformer.llm.calibration import Calibration, calibrate, entropy_threshold
from beexformer.llm.gates import HeadGate
from beexformer.llm.generation import EarlyExitDecoding, FullDecoding
from beexformer.llm.heads import ExitHeads, default_head_layers
from beexformer.llm.training import TrainConfig, extract_features, top_tokens, train_heads
from conftest import tiny_model


def test_default_head_layers() -> None:
    assert default_head_layers(30) == [6, 12, 18, 24]
    assert default_head_layers(6) == [1, 2, 4, 5]


@pytest.mark.parametrize("pruned", [False, True])
def test_heads_save_and_load_identical(arch: str, pruned: bool, tmp_path: Path) -> None:
    adapter = adapter_for(tiny_model(arch))
    ids = torch.tensor([3, 5, 8, 13, 21]) if pruned else None
    heads = ExitHeads.create(adapter, [2, 4], ids, "tiny").double()
    with torch.no_grad():
        for p in heads.parameters():  # move away from the init so loading cannot pass by re-initialising
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "heads.safetensors"
    heads.save(path)
    loaded = ExitHeads.load(path, adapter)
    assert loaded.layers == [2, 4]
    x = torch.randn(3, 32, dtype=torch.float64)
    for layer in (2, 4):
        torch.testing.assert_close(loaded.head(layer)(x), heads.head(layer)(x), rtol=0, atol=0)
    assert (loaded.head(2)(x).shape[-1] == 6) if pruned else (loaded.head(2)(x).shape[-1] == 97)


def test_heads_load_rejects_wrong_model_and_garbage(tmp_path: Path) -> None:
    small = adapter_for(tiny_model("llama", layers=6))
    other = adapter_for(tiny_model("llama", layers=4))
    path = tmp_path / "h.safetensors"
    ExitHeads.create(small, [5], None, "tiny").save(path)
    with pytest.raises(CheckpointError, match="6 layers"):
        ExitHeads.load(path, other)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"not a file")
    with pytest.raises(CheckpointError):
        ExitHeads.load(garbage, small)
    with pytest.raises(ConfigError):
        ExitHeads.create(small, [6], None, "tiny")


def test_pruned_head_other_class_maps_to_minus_one() -> None:
    adapter = adapter_for(tiny_model("gpt2"))
    heads = ExitHeads.create(adapter, [3], torch.tensor([4, 9]), "tiny")
    assert heads.head(3).class_to_token(torch.tensor([0, 1, 2])).tolist() == [4, 9, -1]


def test_entropy_threshold_on_hand_made_table() -> None:
    # Sorted by entropy: agreements 1 1 1 0 1 0 0 -> running A(k): 1, 1, 1, .75, .8, .67, .57
    entropies = torch.tensor([0.7, 0.1, 0.3, 0.2, 0.4, 0.5, 0.6])
    agree = torch.tensor([False, True, True, True, False, True, False])
    assert entropy_threshold(entropies, agree, 1.0)[:2] == (pytest.approx(0.3), 3)
    assert entropy_threshold(entropies, agree, 0.8)[:2] == (pytest.approx(0.5), 5)
    assert entropy_threshold(entropies, agree, 0.75)[:2] == (pytest.approx(0.5), 5)
    assert entropy_threshold(entropies, agree, 0.5)[:2] == (pytest.approx(0.7), 7)


def test_entropy_threshold_respects_ties_and_impossible_levels() -> None:
    # The two most confident tokens tie; one of them is wrong, so A=1.0 is not reachable at k=1 alone.
    entropies = torch.tensor([0.1, 0.1, 0.9])
    agree = torch.tensor([True, False, True])
    thr, k, _ = entropy_threshold(entropies, agree, 1.0)
    assert thr == -math.inf and k == 0
    thr, k, acc = entropy_threshold(entropies, agree, 0.5)
    assert (k, acc) == (3, pytest.approx(2 / 3))
    with pytest.raises(ConfigError):
        entropy_threshold(entropies, agree, 0.0)


def test_calibration_roundtrip(tmp_path: Path) -> None:
    scores = {
        "entropy": {3: torch.tensor([0.1, 0.2, 0.3, 0.4])},
        "agree": {3: torch.tensor([True, True, False, False])},
        "real": {3: torch.tensor([True, True, True, True])},
    }
    calib = calibrate(scores, [0.9, 0.5], 4, "x.txt")
    calib.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert again.thresholds_for(0.9) == {3: pytest.approx(0.2)}
    assert again.thresholds_for(0.5) == {3: pytest.approx(0.4)}
    with pytest.raises(ConfigError):
        again.thresholds_for(0.7)


def test_first_exits_of_every_subset_of_gate_layers(tmp_path: Path) -> None:
    # Six tokens, two layers, alpha 0.5 takes every token each layer may take (A(k) >= 0.5 up to k = N here).
    # Layer 2 fires on tokens 0-2 (entropy 0.1 < its threshold), layer 5 on tokens 0-5; agreement: layer 2
    # agrees on tokens 0 and 1, layer 5 on tokens 0-3.
    scores = {
        "entropy": {
            2: torch.tensor([0.1, 0.1, 0.1, 0.9, 0.9, 0.9]),
            5: torch.tensor([0.1, 0.1, 0.1, 0.2, 0.2, 0.2]),
        },
        "agree": {
            2: torch.tensor([True, True, False, False, False, False]),
            5: torch.tensor([True, True, True, True, False, False]),
        },
        "real": {2: torch.ones(6, dtype=torch.bool), 5: torch.ones(6, dtype=torch.bool)},
    }
    calib = calibrate(scores, [0.6], 6, "x.txt")
    assert calib.thresholds_for(0.6) == {2: pytest.approx(0.1), 5: pytest.approx(0.2)}
    both = calib.first_exits_for(0.6, "entropy", [5, 2])
    assert both is not None and both.layers == (2, 5)
    assert both.shares == pytest.approx((3 / 6, 3 / 6)) and both.agreement == pytest.approx((2 / 3, 1 / 3))
    late = calib.first_exits_for(0.6, "entropy", [5])
    assert late is not None and late.shares == pytest.approx((1.0,)) and late.agreement == pytest.approx((4 / 6,))
    # Agrees with the per-layer entries where every layer gates.
    assert [e.first_exit_share for e in calib.level(0.6)] == pytest.approx(list(both.shares))
    calib.save(tmp_path / "c.json")
    again = Calibration.load(tmp_path / "c.json")
    assert again.subsets == calib.subsets and again.first_exits_for(0.6, "probe", [2]) is None


def test_training_lowers_kl_and_resumes(tmp_path: Path) -> None:
    adapter = adapter_for(tiny_model("llama").float())
    rows = torch.randint(0, 97, (6, 24), generator=torch.Generator().manual_seed(0))
    features = extract_features(adapter, rows, [2])
    ids = top_tokens(features.argmax, 30, 97)
    assert ids.numel() == 30 and bool((ids[1:] > ids[:-1]).all())
    heads = ExitHeads.create(adapter, [2], ids, "tiny")
    ckpt = tmp_path / "h.ckpt.pt"
    logs: list[str] = []
    first = train_heads(
        adapter,
        heads,
        features,
        TrainConfig(steps=50, batch_tokens=64, checkpoint_every=25),
        ckpt,
        logs.append,
    )
    early = first.history[0]["kl_2"]
    assert first.losses[2] < early
    more = train_heads(
        adapter,
        heads,
        features,
        TrainConfig(steps=75, batch_tokens=64, checkpoint_every=25),
        ckpt,
        logs.append,
    )
    assert any("resumed" in line and "step 50" in line for line in logs)
    assert more.steps == 75


def test_kv_copy_runs_and_never_firing_equals_plain(arch: str) -> None:
    adapter = adapter_for(tiny_model(arch))
    heads = ExitHeads.create(adapter, [2], None, "tiny").double()
    prompt = torch.tensor([1, 2, 3])
    plain = FullDecoding(adapter).generate(prompt, 12).tokens
    never = EarlyExitDecoding(adapter, HeadGate(heads, {2: -1.0}), kv_fill="copy").generate(prompt, 12)
    assert never.tokens == plain
    always = EarlyExitDecoding(adapter, HeadGate(heads, {2: 1e9}), kv_fill="copy").generate(prompt, 12)
    assert len(always.tokens) == 12 and always.exit_depths[1:] == [2] * 11


def test_float16_gate_heads_round_logits_only_and_calibration_records_their_precision(tmp_path: Path) -> None:
    """A float16 copy stores only the linear weights in half precision (half the bytes a gate reads); its
    logits equal the float32 head's up to float16 rounding; a calibration made with it says so, and the
    gate built from that calibration uses float16 weights again."""
    from beexformer.llm.calibration import calibrate_file

    model = tiny_model("llama", layers=4).float()  # the tiny models are float64; gates run in float32
    adapter = adapter_for(model)
    heads = ExitHeads.create(adapter, [1, 2], torch.arange(0, 64), "tiny")
    half = heads.with_weight_dtype(torch.float16)
    assert heads.head(1).weight.dtype == torch.float32  # the original is untouched
    assert half.head(1).weight.dtype == torch.float16 and half.head(1).norm.weight.dtype == torch.float32
    hidden = torch.randn(5, adapter.hidden_size)
    full, rounded = heads.head(1)(hidden), half.head(1)(hidden)
    assert rounded.dtype == torch.float32
    torch.testing.assert_close(rounded, full, atol=2e-2, rtol=2e-2)
    assert not torch.equal(rounded, full)

    text = tmp_path / "calib.txt"
    text.write_text(" ".join(f"w{i % 37}" for i in range(3000)))
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(37)} | {"[UNK]": 37}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)
    calib = calibrate_file(adapter, tokenizer, heads, str(text), [0.5], 512, 32, gate_dtype="float16")
    calib.save(tmp_path / "c.json")
    loaded = Calibration.load(tmp_path / "c.json")
    assert loaded.gate_dtype == "float16"
    assert loaded.gate_heads(heads).head(2).weight.dtype == torch.float16
    with pytest.raises(ConfigError):
        calibrate_file(adapter, tokenizer, heads, str(text), [0.5], 512, 32, gate_dtype="int8")


def test_features_keep_float32_where_float16_overflows() -> None:
    """Gemma's deep residual stream exceeds float16's range: such features stay float32 (finite), others are
    stored in float16."""
    model = tiny_model("llama", layers=4).float()
    adapter = adapter_for(model)
    with torch.no_grad():  # a residual stream far beyond 65,504 after layer 2
        adapter.layers[1].mlp.down_proj.weight.mul_(1e5)
    rows = torch.randint(0, 97, (2, 8), generator=torch.Generator().manual_seed(0))
    features = extract_features(adapter, rows, [1, 3])
    assert features.hidden[1].dtype == torch.float16
    assert features.hidden[3].dtype == torch.float32 and bool(torch.isfinite(features.hidden[3]).all())
    assert float(features.hidden[3].abs().max()) > 65504
