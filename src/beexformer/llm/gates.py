"""Gating functions: when is an exit's prediction good enough to stop?

Per-position scores on logits [..., V]: confidence (max probability, exit if >= lambda), entropy (exit if
<= tau) and saturation (argmax unchanged over the last n exits, exit when it holds). `HeadGate` turns trained
exit heads and calibrated thresholds into the callable the layer-wise decoder asks at each gate layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from beexformer.llm.heads import ExitHeads


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability per position."""
    return torch.softmax(logits.float(), dim=-1).amax(dim=-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the softmax per position."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def saturation(argmax_by_layer: torch.Tensor, patience: int) -> torch.Tensor:
    """Bool [L, N]: at exit l the argmax equals that of the previous `patience` exits (False if l < patience).

    argmax_by_layer: [L, N] predicted token per exit point (in depth order) and position.
    """
    num = argmax_by_layer.shape[0]
    same = torch.zeros_like(argmax_by_layer, dtype=torch.bool)
    for layer in range(patience, num):
        window = argmax_by_layer[layer - patience : layer + 1]
        same[layer] = (window == window[-1]).all(dim=0)
    return same


@dataclass(frozen=True)
class HeadVerdict:
    token: int  # -1 for the pruned head's "other" class
    entropy: float


class HeadGate:
    """Exit at layer l when head l's argmax is a real token and its entropy <= threshold[l].

    Layers without a threshold (or with -inf) never fire. The head runs in the model's dtype; the gate work
    is one small matrix-vector product, a log-softmax and an argmax.
    """

    def __init__(self, heads: ExitHeads, thresholds: Mapping[int, float]) -> None:
        self.heads = heads
        self.thresholds = {int(k): float(v) for k, v in thresholds.items() if float(v) > float("-inf")}

    @property
    def layers(self) -> frozenset[int]:
        return frozenset(layer for layer in self.thresholds if layer in self.heads.layers)

    def verdict(self, depth: int, hidden: torch.Tensor) -> HeadVerdict:
        head = self.heads.head(depth)
        logits = head(hidden)
        logp = torch.log_softmax(logits, dim=-1)
        ent = float(-(logp.exp() * logp).sum())
        cls = int(logits.argmax())
        return HeadVerdict(int(head.class_to_token(torch.tensor(cls))), ent)

    def __call__(self, depth: int, hidden: torch.Tensor) -> int | None:
        # The hot path of every gated step: no tensor allocations beyond the head's own output.
        head = self.heads.head(depth)
        logp = torch.log_softmax(head(hidden), dim=-1)
        if float(-(logp.exp() * logp).sum()) > self.thresholds[depth]:
            return None
        cls = int(logp.argmax())
        if head.pruned:
            return int(head.token_ids[cls]) if cls < head.token_ids.numel() else None
        return cls


class ProbeGate:
    """Exit at layer l when probe l's score >= threshold[l] and then head l's argmax is a real token.

    The probe (a d x 64 MLP) is asked at every gate layer; the exit head runs only when it fires, so a token
    that goes on costs the probe, not the head. `head_runs` counts the head calls (for the cost model).
    """

    def __init__(self, heads: ExitHeads, thresholds: Mapping[int, float]) -> None:
        self.heads = heads
        self.thresholds = {int(k): float(v) for k, v in thresholds.items() if float(v) < float("inf")}
        self.head_runs = 0
        for layer in self.thresholds:
            heads.probe(layer)  # fail now, not inside decoding, if the heads file has no probes

    @property
    def layers(self) -> frozenset[int]:
        return frozenset(layer for layer in self.thresholds if layer in self.heads.layers)

    def __call__(self, depth: int, hidden: torch.Tensor) -> int | None:
        if float(self.heads.probes[str(depth)](hidden)) < self.thresholds[depth]:
            return None
        self.head_runs += 1
        head = self.heads.head(depth)
        cls = int(head(hidden).argmax())
        if head.pruned:
            return int(head.token_ids[cls]) if cls < head.token_ids.numel() else None
        return cls
