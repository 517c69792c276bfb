"""Learned confidence probes: a cheap gate in front of each exit head.

A probe at layer l is a tiny MLP (or a linear map) on the RMS-normalised hidden state after l layers. It
predicts whether exit head l's top token equals the final layer's greedy token. It is trained on the same
frozen-backbone features as the heads (the self-distilled text), with labels from the trained heads, and its
score is calibrated like a head's entropy (`calibration.py`). In decoding the probe is asked first and the
exit head runs only when it fires: the probe reads d x 64 weights instead of the head's classes x d, so a
gate that says "continue" costs a small fraction of a layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from beexformer.llm.heads import ExitHeads
from beexformer.llm.training import Features


class ExitProbe(nn.Module):
    """Logit of "exit head l agrees with the final layer" from the hidden state after l layers."""

    def __init__(self, hidden_size: int, width: int = 64) -> None:
        super().__init__()
        # width 0: a linear probe; otherwise one hidden layer of `width` units.
        if width > 0:
            self.net: nn.Module = nn.Sequential(nn.Linear(hidden_size, width), nn.GELU(), nn.Linear(width, 1))
        else:
            self.net = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # RMS normalisation without a learned scale (the first linear map absorbs it): the residual stream's
        # scale grows with depth and differs between models, its direction is what carries the information.
        x = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6)
        return self.net(x).squeeze(-1)


@dataclass(frozen=True)
class ProbeConfig:
    width: int = 64
    steps: int = 600
    batch: int = 1024
    lr: float = 2e-3
    seed: int = 0


@torch.no_grad()
def head_agreement(heads: ExitHeads, features: Features, layer: int, chunk: int = 4096) -> torch.Tensor:
    """Bool [N]: head `layer`'s top token equals the model's greedy token on each feature row."""
    head = heads.head(layer)
    dtype = head.weight.dtype
    out = []
    for start in range(0, features.size, chunk):
        logits = head(features.hidden[layer][start : start + chunk].to(dtype))
        out.append(head.class_to_token(logits.argmax(-1)) == features.argmax[start : start + chunk])
    return torch.cat(out)


def train_probes(
    heads: ExitHeads, features: Features, cfg: ProbeConfig, log: Callable[[str], None] = print
) -> dict[int, float]:
    """Train one probe per head layer (binary cross-entropy, rows sampled by the features' weights) and
    attach them to `heads`; return each probe's training accuracy against its majority-class baseline."""
    dtype = heads.head(heads.layers[0]).weight.dtype
    size = int(features.hidden[heads.layers[0]].shape[1])
    gen = torch.Generator().manual_seed(cfg.seed)
    accuracy: dict[int, float] = {}
    probes = {}
    for layer in heads.layers:
        labels = head_agreement(heads, features, layer).float()
        probe = ExitProbe(size, cfg.width).to(dtype)
        opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=1e-4)
        hidden = features.hidden[layer]
        for _ in range(cfg.steps):
            idx = torch.multinomial(features.weight, cfg.batch, replacement=True, generator=gen)
            loss = nn.functional.binary_cross_entropy_with_logits(probe(hidden[idx].to(dtype)).float(), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        probe.eval()
        with torch.no_grad():
            pred = torch.cat([probe(hidden[s : s + 4096].to(dtype)) > 0 for s in range(0, features.size, 4096)])
        accuracy[layer] = float((pred == labels.bool()).float().mean())
        base = float(labels.mean())
        log(f"probe L{layer}: train accuracy {accuracy[layer]:.3f} (head agrees on {base:.3f} of rows)")
        probes[layer] = probe
    heads.attach_probes(probes, cfg.width)
    return accuracy
