"""Calibrating per-head entropy thresholds to a target agreement level (design.md 8b, arXiv 2407.21082).

For a head and a level alpha: sort the calibration tokens by the head's entropy (most confident first); let
A(k) be the share of the k most confident whose head token equals the full model's greedy token; the
threshold is the entropy of the k-th token for the largest k with A(k) >= alpha, where k only ends between
two distinct entropies (so "entropy <= threshold" selects exactly those k tokens). If no k qualifies, the
head never fires (threshold -inf).

The guarantee is empirical on the calibration text, not distribution-free: another text (or the model's own
generations, whose prefixes differ after an exit) can agree less.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from beexformer.errors import CheckpointError, ConfigError
from beexformer.llm.adapters import ModelAdapter
from beexformer.llm.forward import trace
from beexformer.llm.heads import ExitHeads
from beexformer.llm.text import chunk, tokenize_file

GATE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def heads_for_gating(heads: ExitHeads, gate_dtype: str) -> ExitHeads:
    """`heads` with their linear weights in `gate_dtype` (the same object for float32)."""
    if gate_dtype not in GATE_DTYPES:
        raise ConfigError(f"gate dtype {gate_dtype!r}: choose one of {', '.join(GATE_DTYPES)}")
    return heads if gate_dtype == "float32" else heads.with_weight_dtype(GATE_DTYPES[gate_dtype])


@dataclass(frozen=True)
class Threshold:
    """The calibrated threshold of one head at one level, and what it did on the calibration set."""

    layer: int
    alpha: float
    threshold: float  # -inf: never exit
    exit_share: float  # share of calibration tokens with entropy <= threshold
    agreement: float  # agreement among them (nan when none)


def entropy_threshold(entropies: torch.Tensor, agree: torch.Tensor, alpha: float) -> tuple[float, int, float]:
    """(threshold, k, A(k)) for one head; see the module docstring. entropies [N] float, agree [N] bool."""
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"target agreement must be in (0, 1], got {alpha}")
    order = torch.argsort(entropies, stable=True)
    ent = entropies[order].double()
    running = torch.cumsum(agree[order].double(), 0) / torch.arange(1, ent.numel() + 1, dtype=torch.float64)
    # k (1-based) may only end where the next entropy is larger, else "<= threshold" would take in more.
    boundary = torch.ones_like(ent, dtype=torch.bool)
    boundary[:-1] = ent[1:] > ent[:-1]
    ok = (running >= alpha) & boundary
    if not bool(ok.any()):
        return -math.inf, 0, math.nan
    k = int(torch.nonzero(ok).max()) + 1
    return float(ent[k - 1]), k, float(running[k - 1])


@dataclass
class Calibration:
    """Thresholds per level and head layer."""

    entries: list[Threshold]
    tokens: int
    text: str
    # Per head: agreement of its argmax with the final layer over all calibration tokens (no threshold).
    overall_agreement: dict[int, float] = field(default_factory=dict)
    # Precision of the heads' linear weights when calibrated; gates must use the same (`gate_heads`).
    gate_dtype: str = "float32"

    def gate_heads(self, heads: ExitHeads) -> ExitHeads:
        """`heads` in the precision these thresholds were set with."""
        return heads_for_gating(heads, self.gate_dtype)

    def thresholds_for(self, alpha: float) -> dict[int, float]:
        found = {e.layer: e.threshold for e in self.entries if math.isclose(e.alpha, alpha)}
        if not found:
            levels = sorted({e.alpha for e in self.entries})
            raise ConfigError(f"no thresholds for alpha={alpha}; calibrated levels: {levels}")
        return found

    def save(self, path: str | Path) -> None:
        data = {
            "tokens": self.tokens,
            "text": self.text,
            "overall_agreement": self.overall_agreement,
            "gate_dtype": self.gate_dtype,
            "entries": [asdict(e) for e in self.entries],
        }
        Path(path).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        try:
            data = json.loads(Path(path).read_text())
            overall = {int(k): float(v) for k, v in data.get("overall_agreement", {}).items()}
            dtype = data.get("gate_dtype", "float32")
            if dtype not in GATE_DTYPES:
                raise ValueError(f"gate_dtype {dtype!r} is not one of {sorted(GATE_DTYPES)}")
            return cls([Threshold(**e) for e in data["entries"]], data["tokens"], data["text"], overall, dtype)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"cannot read calibration {path}: {err}") from err

    def to_markdown(self) -> str:
        overall = ", ".join(f"layer {k}: {v:.3f}" for k, v in sorted(self.overall_agreement.items()))
        lines = [
            f"calibration on {self.tokens} tokens of {self.text} (heads in {self.gate_dtype})",
            f"head agreement with the final layer on all tokens: {overall}",
            "",
            "| alpha | layer | entropy threshold | exit share | agreement |",
            "|---|---|---|---|---|",
        ]
        for e in self.entries:
            lines.append(f"| {e.alpha} | {e.layer} | {e.threshold:.4f} | {e.exit_share:.3f} | {e.agreement:.3f} |")
        return "\n".join(lines)


@torch.no_grad()
def head_scores(adapter: ModelAdapter, heads: ExitHeads, rows: torch.Tensor) -> dict[str, Any]:
    """Per token: each head's entropy and whether its token equals the model's greedy token."""
    ent: dict[int, list[torch.Tensor]] = {layer: [] for layer in heads.layers}
    agree: dict[int, list[torch.Tensor]] = {layer: [] for layer in heads.layers}
    for start in range(0, rows.shape[0], 4):
        tr = trace(adapter, rows[start : start + 4], keep=heads.layers)
        final = adapter.logits(tr.layers[adapter.num_layers]).argmax(-1).flatten()
        for layer in heads.layers:
            head = heads.head(layer)
            logits = head(tr.layers[layer]).flatten(0, 1).float()
            logp = torch.log_softmax(logits, -1)
            ent[layer].append(-(logp.exp() * logp).sum(-1))
            agree[layer].append(head.class_to_token(logits.argmax(-1)) == final)
    return {
        "entropy": {k: torch.cat(v) for k, v in ent.items()},
        "agree": {k: torch.cat(v) for k, v in agree.items()},
    }


def calibrate(scores: dict[str, Any], alphas: list[float], tokens: int, text: str) -> Calibration:
    entries = []
    for alpha in alphas:
        for layer, ent in scores["entropy"].items():
            thr, k, acc = entropy_threshold(ent, scores["agree"][layer], alpha)
            entries.append(Threshold(layer, alpha, thr, k / ent.numel(), acc))
    overall = {layer: float(agree.float().mean()) for layer, agree in scores["agree"].items()}
    return Calibration(entries, tokens, text, overall)


def calibrate_file(
    adapter: ModelAdapter,
    tokenizer: Any,
    heads: ExitHeads,
    path: str,
    alphas: list[float],
    max_tokens: int,
    seq_len: int,
    skip_tokens: int = 0,
    gate_dtype: str = "float32",
) -> Calibration:
    """Thresholds for `alphas` on a text file, with the heads' weights in `gate_dtype`."""
    gating = heads_for_gating(heads, gate_dtype)
    rows = chunk(tokenize_file(tokenizer, path, max_tokens, skip_tokens), seq_len)
    calib = calibrate(head_scores(adapter, gating, rows), alphas, rows.numel(), str(path))
    calib.gate_dtype = gate_dtype
    return calib
