"""The learned activation quantizers (beexformer.quantizers): levels, the documented gradients, init, wiring."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from beexformer.config import GELU_MIN, BEExformerConfig
from beexformer.layers import BinaryLinear
from beexformer.model import BEExformer
from beexformer.quantizers import (
    ActivationQuantizer,
    ElasticSign,
    LsqQuantizer,
    reset_activation_quantizers,
)


def _ready(q: ActivationQuantizer, step: float, threshold: float = 0.0) -> ActivationQuantizer:
    with torch.no_grad():
        q.step.fill_(step)
        if q.threshold is not None:
            q.threshold.fill_(threshold)
        q.initialized.fill_(True)
    return q


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("signed", [True, False])
def test_exactly_two_to_the_k_levels_at_the_documented_values(bits, signed):
    q = _ready(LsqQuantizer(bits, signed=signed), step=0.3)
    x = torch.linspace(-10, 10, 20001)
    levels = torch.unique(q(x))
    assert len(levels) == 2**bits
    z = (2**bits - 1) / 2 if signed else 0
    expected = 0.3 * (torch.arange(2**bits, dtype=torch.float32) - z)
    assert torch.equal(levels, torch.sort(expected).values)
    # nearest level, ties up: an input half-way between two levels goes to the upper one
    assert q(torch.tensor([0.0])).item() == pytest.approx(0.15 if signed else 0.0)
    if signed:
        assert q(torch.tensor([0.3])).item() == pytest.approx(0.45)  # 0.3 is between 0.15 and 0.45: tie -> up
        assert q(torch.tensor([0.29])).item() == pytest.approx(0.15)


def _formula(x, s, b, bits, signed, m=0.0):
    """The docstring's forward and backward, written out elementwise (not with the module's code)."""
    z = (2**bits - 1) / 2 if signed else 0.0
    top = 2**bits - 1
    out, gx, gs, gb = [], [], 0.0, 0.0
    for v in x:
        u = (v - b - m) / s + z
        n = min(max(math.floor(u + 0.5), 0), top)
        out.append(s * (n - z) + m)
        if 0 < u < top:
            gx.append(1.0)
            gs += (n - z) - (v - b - m) / s
            gb += -1.0
        else:
            gx.append(0.0)
            gs += n - z
    return np.array(out), np.array(gx), gs, gb


@pytest.mark.parametrize(
    ("make", "bits", "signed", "floor"),
    [
        (lambda: LsqQuantizer(2, True), 2, True, 0.0),
        (lambda: LsqQuantizer(4, True), 4, True, 0.0),
        (lambda: LsqQuantizer(2, False), 2, False, 0.0),
        (lambda: LsqQuantizer(4, False), 4, False, 0.0),
        (lambda: LsqQuantizer(4, False, floor=GELU_MIN), 4, False, GELU_MIN),
        (lambda: ElasticSign(True), 1, True, 0.0),
        (lambda: ElasticSign(False), 1, False, 0.0),
        (lambda: ElasticSign(False, floor=GELU_MIN), 1, False, GELU_MIN),
    ],
)
def test_gradients_are_the_documented_lsq_formula(make, bits, signed, floor):
    torch.manual_seed(0)
    q = _ready(make(), step=0.37, threshold=0.05)
    b = 0.05 if q.threshold is not None else 0.0
    x = (torch.randn(400, dtype=torch.float64) * 1.5).requires_grad_(True)
    y = q(x)
    y.sum().backward()
    out, gx, gs, gb = _formula(x.detach().numpy(), 0.37, b, bits, signed, floor)
    assert np.allclose(y.detach().numpy(), out, atol=1e-6)
    assert np.array_equal(x.grad.numpy(), gx)
    assert q.step.grad.item() == pytest.approx(gs, rel=1e-5, abs=1e-5)
    if q.threshold is not None:
        assert q.threshold.grad.item() == pytest.approx(gb)
    # both sides of the clamp are exercised
    assert 0 < gx.sum() < len(gx)


def test_elastic_sign_is_a_sign_with_learned_scale_and_threshold_that_both_get_gradients():
    torch.manual_seed(1)
    signed = _ready(ElasticSign(signed=True), step=0.8, threshold=0.1)
    x = torch.randn(64, 16)
    expected = 0.4 * torch.where(x - 0.1 >= 0, 1.0, -1.0)
    assert torch.equal(signed(x), expected)
    assert signed(torch.tensor([0.1])).item() == pytest.approx(0.4)  # x = b: the positive level, as sign(0) = +1
    unsigned = _ready(ElasticSign(signed=False), step=0.8, threshold=0.1)
    assert torch.equal(unsigned(x), 0.8 * (x - 0.1 >= 0.4).float())
    for q in (signed, unsigned):
        (q(x) * torch.randn_like(x)).sum().backward()
        assert q.step.grad is not None and q.step.grad.abs().item() > 0
        assert q.threshold.grad is not None and q.threshold.grad.abs().item() > 0


@pytest.mark.parametrize("bits", [2, 4])
def test_a_floor_moves_the_unsigned_levels_down_to_it(bits):
    q = _ready(LsqQuantizer(bits, signed=False, floor=GELU_MIN), step=0.3)
    levels = torch.unique(q(torch.linspace(-10, 10, 20001)))
    assert len(levels) == 2**bits
    expected = 0.3 * torch.arange(2**bits, dtype=torch.float32) + GELU_MIN
    assert torch.allclose(levels, expected, atol=1e-6)
    # GELU's outputs in [-0.17, 0) go to the nearest of m and m + s, where from 0 they all become 0
    inactive = torch.nn.functional.gelu(torch.tensor([-0.75, -2.0, -6.0]))  # -0.16997, -0.0455, -6e-9
    assert torch.allclose(q(inactive), torch.tensor([GELU_MIN, GELU_MIN, GELU_MIN + 0.3]), atol=1e-6)
    plain = _ready(LsqQuantizer(bits, signed=False), step=0.3)
    assert torch.equal(plain(inactive), torch.zeros(3))
    x = torch.nn.functional.gelu(torch.randn(4000))
    assert (q(x) - x).abs().mean() < (plain(x) - x).abs().mean()
    with pytest.raises(ValueError, match="unsigned"):
        LsqQuantizer(bits, signed=True, floor=GELU_MIN)


def test_lsq_rejects_other_widths():
    with pytest.raises(ValueError, match="2 or 4"):
        LsqQuantizer(3)


@pytest.mark.parametrize("signed", [True, False])
def test_first_batch_sets_the_step_once_and_it_is_saved(signed):
    torch.manual_seed(2)
    q = LsqQuantizer(4, signed=signed)
    x = torch.randn(8, 32).abs() if not signed else torch.randn(8, 32)
    q(x)
    positive_levels = 8 if signed else 15
    assert q.step.item() == pytest.approx(2 * x.abs().mean().item() / math.sqrt(positive_levels), rel=1e-6)
    first = q.step.item()
    q(10 * x)
    assert q.step.item() == first  # not re-initialised by later batches
    loaded = LsqQuantizer(4, signed=signed)
    loaded.load_state_dict(q.state_dict())
    assert bool(loaded.initialized) and loaded.step.item() == first
    elastic = ElasticSign(signed=True)
    elastic(x)
    assert elastic.step.item() == pytest.approx(2 * x.abs().mean().item(), rel=1e-6)  # levels +-mean|x|


def test_quantization_off_equals_float():
    torch.manual_seed(3)
    ref = torch.nn.Linear(12, 5)
    layer = BinaryLinear.from_linear(ref, weight_bits=32, act_bits=32, act_binarizer="elastic")
    x = torch.randn(4, 12, requires_grad=True)
    assert torch.equal(layer(x), ref(x))
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    # a learned quantizer is the identity on its own levels: nothing more is lost than the rounding itself
    q = _ready(LsqQuantizer(4), step=0.25)
    on_grid = 0.25 * (torch.arange(16, dtype=torch.float32) - 7.5)
    assert torch.equal(q(on_grid), on_grid)


def test_old_configs_load_unchanged_and_keep_their_weights_layout():
    old = BEExformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_blocks=2, act_bits=1).to_dict()
    del old["act_binarizer"]  # a config.json written before the field existed
    config = BEExformerConfig.from_dict(old)
    assert config.act_binarizer == "mean_sign"
    keys = set(BEExformer(config).state_dict())
    assert not any("input_quantizer" in k for k in keys)


@pytest.mark.parametrize(
    ("fields", "kind", "unsigned_layers"),
    [
        ({"act_bits": 4}, LsqQuantizer, {"s2"}),
        ({"act_bits": 2, "ffn": "ffn"}, LsqQuantizer, {"lin2"}),
        ({"act_bits": 1, "act_binarizer": "elastic"}, ElasticSign, {"s2"}),
    ],
)
def test_model_wiring_trains_every_quantizer(fields, kind, unsigned_layers):
    torch.manual_seed(4)
    config = BEExformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_blocks=2, **fields)
    model = BEExformer(config)
    quantizers = {n: m for n, m in model.named_modules() if isinstance(m, ActivationQuantizer)}
    per_block = 4 + (4 if config.ffn == "slfn" else 2)  # q, k, v, o + the feed-forward layers
    assert len(quantizers) == 2 * per_block and all(isinstance(q, kind) for q in quantizers.values())
    assert {n.split(".")[-2] for n, q in quantizers.items() if not q.signed} == unsigned_layers
    ids = torch.randint(1, 50, (4, 7))
    out = model(ids, torch.ones_like(ids), torch.zeros_like(ids), labels=torch.tensor([0, 1, 0, 1]))
    out.loss.backward()
    for name, q in quantizers.items():
        assert q.step.grad is not None and q.step.grad.abs().item() > 0, name
    assert reset_activation_quantizers(model) == len(quantizers)
    assert not any(bool(q.initialized) for q in quantizers.values())


def test_packed_export_refuses_a_quantizer_that_never_ran():
    """The engine runs W1A4 (tests/engine), but a step that was never initialised is no model to export."""
    from beexformer.engine.export import packed_tensors
    from beexformer.errors import CheckpointError

    model = BEExformer(BEExformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_blocks=2, act_bits=4))
    with pytest.raises(CheckpointError, match="never initialised"):
        packed_tensors(model.eval())


def test_accounting_counts_k_binary_ops_per_multiply_accumulate_and_labels_the_bits():
    import dataclasses

    from beexformer.accounting import bits_label, ops_per_sample

    config = BEExformerConfig(act_bits=1)
    one = ops_per_sample(config, 10).full
    four = ops_per_sample(dataclasses.replace(config, act_bits=4), 10).full
    assert four.flops == one.flops and four.bops == 4 * one.bops > 0
    assert bits_label(dataclasses.replace(config, act_bits=2)) == "W1A2 (LSQ)"
    assert bits_label(dataclasses.replace(config, act_binarizer="elastic")) == "W1A1 (elastic)"
    assert bits_label(config) == "W1A1"
    # kept channels: C float multiply-accumulates per output of each linear (4 d outputs in attention, d_ff + d
    # in the BERT FFN), per token
    bert = dataclasses.replace(config, act_bits=4, ffn="ffn")
    kept = ops_per_sample(dataclasses.replace(bert, act_outliers=3), 10).blocks[0]
    base = ops_per_sample(bert, 10).blocks[0]
    assert kept.bops == base.bops and kept.flops - base.flops == 10 * 3 * (5 * bert.d_model + bert.d_ff)
    assert bits_label(dataclasses.replace(bert, act_outliers=3)) == "W1A4 (LSQ, 3 float channels)"


def _init_on_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    q = LsqQuantizer(2)
    q(torch.full((4, 8), float(rank + 1)))  # rank 0 sees |x| = 1, rank 1 sees |x| = 2
    torch.save(q.step.detach(), f"{out_dir}/step{rank}.pt")
    torch.distributed.destroy_process_group()


def test_processes_start_from_one_step(tmp_path):
    """With several processes (DDP), each first batch differs; the replicas must still share one step."""
    torch.multiprocessing.spawn(_init_on_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    steps = [torch.load(tmp_path / f"step{r}.pt").item() for r in (0, 1)]
    assert steps[0] == steps[1] == pytest.approx((2 * 1 + 2 * 2) / 2 / math.sqrt(2))


@pytest.mark.parametrize("make", [lambda: LsqQuantizer(4, outliers=2), lambda: ElasticSign(signed=True, outliers=2)])
def test_outlier_channels_pass_at_full_precision_and_the_rest_is_quantized_without_them(make):
    torch.manual_seed(4)
    x = torch.randn(3, 7, 16)
    x[..., 5] *= 30  # the two channels with the largest |x| on the first batch
    x[..., 12] *= 10
    q = make()
    y = q(x)
    assert q.outlier_channels.tolist() == [5, 12]
    assert torch.equal(y[..., [5, 12]], x[..., [5, 12]])
    # the other channels: the same quantizer (same step, chosen without the outliers) on the zeroed input
    plain = _ready(type(q)(*([4] if isinstance(q, LsqQuantizer) else [])), q.step.item())
    if q.threshold is not None:
        plain.threshold.data.copy_(q.threshold.data)
    zeroed = x.clone()
    zeroed[..., [5, 12]] = 0
    rest = [c for c in range(16) if c not in (5, 12)]
    assert torch.equal(y[..., rest], plain(zeroed)[..., rest])
    assert q.step.item() == pytest.approx(2 * zeroed.abs().mean().item() / math.sqrt(q.positive_levels), rel=1e-6)
    # the kept channels get the identity gradient; later batches keep the channels chosen first
    x2 = (x * 2).requires_grad_(True)
    q(x2).sum().backward()
    assert torch.equal(x2.grad[..., [5, 12]], torch.ones(3, 7, 2))
    assert q.outlier_channels.tolist() == [5, 12]
    loaded = make()
    loaded.load_state_dict(q.state_dict())
    assert loaded.outlier_channels.tolist() == [5, 12]


def test_outlier_channels_need_a_learned_quantizer():
    from beexformer.errors import ConfigError

    with pytest.raises(ConfigError, match="act_binarizer=elastic"):
        BEExformerConfig(act_bits=1, act_outliers=4).validate()
    with pytest.raises(ConfigError, match="act_outliers=-1"):
        BEExformerConfig(act_bits=4, act_outliers=-1).validate()
    assert BEExformerConfig(act_bits=1, act_binarizer="elastic", act_outliers=4).validate()


def test_the_gelu_floor_reaches_only_lin2_and_needs_a_learned_quantizer():
    from beexformer.errors import ConfigError

    for fields in ({"act_bits": 1}, {"act_bits": 32}):
        with pytest.raises(ConfigError, match="act_gelu_floor"):
            BEExformerConfig(act_gelu_floor=True, **fields).validate()
    config = BEExformerConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_blocks=2, act_bits=4, ffn="ffn")
    floors = {
        n.split(".")[-2]: q.floor
        for n, q in BEExformer(dataclasses.replace(config, act_gelu_floor=True)).named_modules()
        if isinstance(q, ActivationQuantizer)
    }
    assert floors == {"q": 0.0, "k": 0.0, "v": 0.0, "o": 0.0, "lin1": 0.0, "lin2": GELU_MIN}
    old = config.to_dict()
    del old["act_gelu_floor"]  # a config.json written before the field existed
    assert BEExformerConfig.from_dict(old).act_gelu_floor is False


def test_each_linear_codes_its_input_as_what_produced_it():
    """`BEExformerConfig.input_coding` is what both the layers and the packed runtime read: s2 after the
    sigmoid (unsigned, mean-sign centre 0.5), lin2 after the GELU (unsigned, centre 0), the rest signed."""
    small = {"vocab_size": 50, "d_model": 16, "n_heads": 2, "d_ff": 32, "n_blocks": 1}
    for ffn, names in (("slfn", ("s1", "s2", "f1", "f2")), ("ffn", ("lin1", "lin2"))):
        layers = {
            n.split(".")[-1]: m
            for n, m in BEExformer(BEExformerConfig(act_bits=1, ffn=ffn, **small)).named_modules()
            if isinstance(m, BinaryLinear) and n.startswith("blocks.0")
        }
        assert set(layers) == {"q", "k", "v", "o", *names}
        centres = {name: layer.act_centre for name, layer in layers.items()}
        assert centres == {name: 0.5 if name == "s2" else 0.0 for name in layers}
        unsigned = {name for name, layer in layers.items() if layer.non_negative}
        assert unsigned == {"s2"} if ffn == "slfn" else unsigned == {"lin2"}
