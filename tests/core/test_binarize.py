import pytest
import torch
from torch import nn

from beexformer.binarize import (
    ApproxSign,
    SteSign,
    binarize_activation,
    binarize_weight,
    get_quantizer,
    hard_sign,
)
from beexformer.layers import BinaryEmbedding, BinaryLinear

POINTS = [-1.5, -0.75, -0.25, 0.25, 0.75, 1.5]


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-30, -1e-30])
    assert hard_sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0]
    assert ApproxSign()(x).tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0]


def test_approx_sign_gradient_matches_polynomial_derivative():
    x = torch.tensor(POINTS, requires_grad=True)
    ApproxSign()(x).sum().backward()
    assert x.grad.tolist() == pytest.approx([0.0, 0.5, 1.5, 1.5, 0.5, 0.0])


def test_approx_sign_gradient_is_derivative_of_g():
    """Check g' against finite differences of g itself, not against the same formula."""

    def g(v):
        return torch.where(v < -1, -1.0, torch.where(v < 0, 2 * v + v**2, torch.where(v < 1, 2 * v - v**2, 1.0)))

    x = torch.linspace(-1.9, 1.9, 77, dtype=torch.float64)
    x = x[(x.abs() - 1).abs() > 1e-3]  # skip the kinks
    x.requires_grad_(True)
    ApproxSign()(x).sum().backward()
    h = 1e-6
    numeric = (g(x.detach() + h) - g(x.detach() - h)) / (2 * h)
    assert torch.allclose(x.grad, numeric, atol=1e-5)


def test_ste_gradient_is_clipped_identity():
    x = torch.tensor(POINTS, requires_grad=True)
    SteSign()(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_unknown_quantizer_is_a_clear_error():
    with pytest.raises(ValueError, match="approx_sign"):
        get_quantizer("sine")


def test_binarized_weight_rows_take_exactly_plus_minus_alpha():
    w = torch.randn(7, 13)
    wb = binarize_weight(w, ApproxSign(), "row")
    alpha = w.abs().mean(dim=1)
    for row, a in zip(wb, alpha, strict=True):
        assert torch.equal(row.abs(), torch.full_like(row, a.item()))
    assert torch.equal(wb.sign(), hard_sign(w))
    wt = binarize_weight(w, ApproxSign(), "tensor")
    assert torch.allclose(wt.abs(), torch.full_like(w, w.abs().mean().item()))


def test_binary_activation_has_one_scale_per_token_and_respects_centre():
    x = torch.rand(2, 3, 16)  # all positive, like sigmoid outputs
    xq = binarize_activation(x, ApproxSign(), centre=0.5)
    beta = (x - 0.5).abs().mean(dim=-1, keepdim=True)
    assert torch.allclose(xq, 0.5 + beta * hard_sign(x - 0.5))
    x0 = torch.randn(2, 3, 16)
    assert torch.allclose(binarize_activation(x0, ApproxSign()), x0.abs().mean(-1, keepdim=True) * hard_sign(x0))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (64, 17)])
def test_binary_linear_with_quantization_off_equals_nn_linear(bias, shape):
    torch.manual_seed(0)
    ref = nn.Linear(*shape, bias=bias)
    layer = BinaryLinear.from_linear(ref, weight_bits=32, act_bits=32)
    x = torch.randn(4, 9, shape[0], requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    assert torch.equal(layer(x), ref(x2))
    layer(x).sum().backward()
    ref(x2).sum().backward()
    assert torch.equal(layer.weight.grad, ref.weight.grad)
    assert torch.equal(x.grad, x2.grad)


def test_binary_linear_w1a1_computes_scaled_sign_product():
    torch.manual_seed(1)
    layer = BinaryLinear(32, 8, weight_bits=1, act_bits=1)
    x = torch.randn(3, 32)
    alpha = layer.weight.abs().mean(dim=1)
    beta = x.abs().mean(dim=1, keepdim=True)
    expected = beta * (hard_sign(x) @ hard_sign(layer.weight).T) * alpha + layer.bias
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_binary_linear_gradient_reaches_latent_weight_through_approx_sign():
    layer = BinaryLinear(4, 1, bias=False, weight_bits=1, act_bits=32, weight_scale="tensor")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.25, -0.75, 1.5, -0.25]]))
    x = torch.ones(1, 4)
    layer(x).sum().backward()
    # y = alpha * sum(sign(w)), alpha = mean|w| = 0.6875, sum(sign(w)) = 0
    # dy/dw_i = sign(w_i)/4 * sum(sign) + alpha * g'(w_i) = 0.6875 * g'(w_i)
    expected = 0.6875 * torch.tensor([1.5, 0.5, 0.0, 1.5])
    assert torch.allclose(layer.weight.grad[0], expected)


def test_binary_embedding_rows_are_scaled_signs():
    emb = BinaryEmbedding(10, 6, bits=1)
    ids = torch.tensor([[1, 4, 4]])
    out = emb(ids)[0]
    table = emb.weight.detach()
    for pos, i in enumerate([1, 4, 4]):
        assert torch.allclose(out[pos], table[i].abs().mean() * hard_sign(table[i]))
    assert torch.allclose(emb.effective_weight()[ids[0]], out)
