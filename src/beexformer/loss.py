"""The soft-routing loss: a weighted sum of the task loss at every exit (docs/design.md section 6).

    L = sum_c w_c * loss(y, z_c)

with w_c one of
- "uniform":  1 / C
- "depth":    c / sum_j j (deeper exits count more)
- "entropy":  softmax_c(-H_c / T) per sample with stop-gradient: confident exits get more weight.
              Entropy is undefined for regression, which falls back to uniform weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from beexformer.exits import entropy


def _stopped_entropy(logits: Tensor) -> Tensor:
    """`exits.entropy` (the one entropy of the project, numpy) of detached logits, back as a tensor: the
    weights are a stop-gradient, so leaving the graph costs nothing but a copy of [C, B, K] numbers."""
    values = entropy(logits.detach().float().cpu().numpy())
    return torch.from_numpy(values).to(device=logits.device, dtype=logits.dtype)


def routing_weights(exit_logits: Tensor, weighting: str, temperature: float = 1.0) -> Tensor:
    """Weights [C, B] (each column sums to 1) for exit_logits [C, B, K]."""
    n_exits, batch = exit_logits.shape[:2]
    device = exit_logits.device
    if weighting == "entropy" and exit_logits.shape[-1] > 1:
        return torch.softmax(-_stopped_entropy(exit_logits) / temperature, dim=0)
    if weighting == "depth":
        depth = torch.arange(1, n_exits + 1, device=device, dtype=exit_logits.dtype)
        return (depth / depth.sum()).unsqueeze(1).expand(n_exits, batch)
    if weighting in ("uniform", "entropy"):
        return torch.full((n_exits, batch), 1.0 / n_exits, device=device, dtype=exit_logits.dtype)
    raise ValueError(f"unknown loss weighting {weighting!r}; choose uniform, depth or entropy")


def per_exit_loss(exit_logits: Tensor, labels: Tensor) -> Tensor:
    """Loss [C, B] of each exit: cross-entropy for classification (K > 1), squared error for regression."""
    n_exits, batch, n_out = exit_logits.shape
    if n_out == 1:
        return (exit_logits[..., 0] - labels.to(exit_logits.dtype).unsqueeze(0)) ** 2
    flat = F.cross_entropy(exit_logits.reshape(-1, n_out), labels.repeat(n_exits), reduction="none")
    return flat.view(n_exits, batch)


def soft_routing_loss(
    exit_logits: Tensor, labels: Tensor, weighting: str = "uniform", temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Returns (scalar loss averaged over the batch, weights [C, B])."""
    weights = routing_weights(exit_logits, weighting, temperature)
    loss = (weights * per_exit_loss(exit_logits, labels)).sum(dim=0).mean()
    return loss, weights
