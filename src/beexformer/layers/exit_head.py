"""The exit ("decision block") after every block: masked mean-pool (or [CLS]), then a small full-precision MLP."""

from __future__ import annotations

from torch import Tensor, nn

from beexformer.layers.binary_linear import BinaryLinear


def masked_mean_pool(x: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of x [B, T, d] over the real tokens (attention_mask == 1)."""
    mask = attention_mask.to(x.dtype).unsqueeze(-1)
    return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def pool(x: Tensor, attention_mask: Tensor, how: str = "mean") -> Tensor:
    """[B, d] summary of x [B, T, d]: masked mean over real tokens, or the first ([CLS]) token's vector."""
    if how == "cls":
        return x[:, 0]
    return masked_mean_pool(x, attention_mask)


class ExitHead(nn.Module):
    def __init__(
        self,
        d_model: int,
        hidden: int,
        n_outputs: int,
        *,
        bits: int = 32,
        pre_norm: bool = False,
        pooling: str = "mean",
    ):
        super().__init__()
        self.pooling = pooling
        # With pre-LN blocks the residual stream is not normalised: the exit normalises it itself.
        self.norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.fc1 = BinaryLinear(d_model, hidden, weight_bits=bits)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_outputs)

    def forward(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(pool(x, attention_mask, self.pooling)))))
