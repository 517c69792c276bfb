"""Calibrating per-head entropy thresholds to a target agreement level (docs/design.md 8b, arXiv 2407.21082).

For a head and a level alpha: sort the calibration tokens by the head's entropy (most confident first); let
A(k) be the share of the k most confident whose head token equals the full model's greedy token; the
threshold is the entropy of the k-th token for the largest k with A(k) >= alpha, where k only ends between
two distinct entropies (so "entropy <= threshold" selects exactly those k tokens). If no k qualifies, the
head never fires (threshold -inf).

Confidence probes (`probes.py`) are calibrated the same way, on their score instead of the entropy (most
confident = highest score; a probe fires when its score >= its threshold; +inf: never).

For the cost model each level also records where tokens would first exit with every calibrated layer gating
(`first_exit_share`, `first_exit_agreement`): the work a decoder will do, known before it runs. Because a gate
costs time whether it fires or not, a decoder may gate at only some of the layers; `FirstExits` records the
same shares for every subset of the layers (the tokens a dropped layer would have taken may exit later), so
that the subset the cost model prices fastest can be chosen from the calibration text alone.

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
    # With every calibrated layer gating at this level: share of tokens that first exit here, their agreement.
    first_exit_share: float = math.nan
    first_exit_agreement: float = math.nan


@dataclass(frozen=True)
class FirstExits:
    """With only `layers` gating (depth order) at one level: the share of calibration tokens that first exit at
    each of them, and the agreement of those tokens with the last layer (nan where none exit)."""

    alpha: float
    gate: str  # "entropy" or "probe"
    layers: tuple[int, ...]
    shares: tuple[float, ...]
    agreement: tuple[float, ...]


# Subsets of more layers than this are not enumerated (2^n of them); only the whole set is recorded then.
MAX_SUBSET_LAYERS = 8


def first_exits(
    fired: dict[int, torch.Tensor], agree: dict[int, torch.Tensor], layers: tuple[int, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(shares, agreement) of the first exits when only `layers` gate; `fired[layer]` [N] bool per token."""
    remaining = torch.ones_like(fired[layers[0]])
    shares, agreement = [], []
    for layer in layers:  # depth order: a token exits at the first layer that fires
        first = remaining & fired[layer]
        remaining &= ~first
        n = int(first.sum())
        shares.append(n / first.numel())
        agreement.append(float(agree[layer][first].float().mean()) if n else math.nan)
    return tuple(shares), tuple(agreement)


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
    # Thresholds on the confidence probes' scores (empty when the heads have no probes).
    probe_entries: list[Threshold] = field(default_factory=list)
    # First exits for every subset of the gate layers, per level and gate kind (empty in older files).
    subsets: list[FirstExits] = field(default_factory=list)

    def first_exits_for(self, alpha: float, gate: str, layers: list[int] | tuple[int, ...]) -> FirstExits | None:
        """The recorded first exits with only `layers` gating at this level, or None if not recorded."""
        key = tuple(sorted(layers))
        found = [s for s in self.subsets if math.isclose(s.alpha, alpha) and s.gate == gate and s.layers == key]
        return found[0] if found else None

    def gate_heads(self, heads: ExitHeads) -> ExitHeads:
        """`heads` in the precision these thresholds were set with."""
        return heads_for_gating(heads, self.gate_dtype)

    def thresholds_for(self, alpha: float, gate: str = "entropy") -> dict[int, float]:
        """Per layer: the entropy threshold (gate "entropy") or the probe-score threshold (gate "probe")."""
        return {e.layer: e.threshold for e in self.level(alpha, gate)}

    def level(self, alpha: float, gate: str = "entropy") -> list[Threshold]:
        entries = self.entries if gate == "entropy" else self.probe_entries
        if gate == "probe" and not entries:
            raise ConfigError(f"{self.text}: calibrated without probes (heads trained without them?)")
        found = [e for e in entries if math.isclose(e.alpha, alpha)]
        if not found:
            levels = sorted({e.alpha for e in entries})
            raise ConfigError(f"no {gate} thresholds for alpha={alpha}; calibrated levels: {levels}")
        return found

    def save(self, path: str | Path) -> None:
        data = {
            "tokens": self.tokens,
            "text": self.text,
            "overall_agreement": self.overall_agreement,
            "gate_dtype": self.gate_dtype,
            "entries": [asdict(e) for e in self.entries],
            "probe_entries": [asdict(e) for e in self.probe_entries],
            "subsets": [asdict(e) for e in self.subsets],
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
            probe = [Threshold(**e) for e in data.get("probe_entries", [])]
            entries = [Threshold(**e) for e in data["entries"]]
            subsets = [
                FirstExits(e["alpha"], e["gate"], *(tuple(e[k]) for k in ("layers", "shares", "agreement")))
                for e in data.get("subsets", [])
            ]
            return cls(entries, data["tokens"], data["text"], overall, dtype, probe, subsets)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"cannot read calibration {path}: {err}") from err

    def to_markdown(self) -> str:
        overall = ", ".join(f"layer {k}: {v:.3f}" for k, v in sorted(self.overall_agreement.items()))
        lines = [
            f"calibration on {self.tokens} tokens of {self.text} (heads in {self.gate_dtype})",
            f"head agreement with the final layer on all tokens: {overall}",
            "",
            "| gate | alpha | layer | threshold | exit share | agreement | first exit share | first exit agreement |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for gate, entries in (("entropy <=", self.entries), ("probe >=", self.probe_entries)):
            for e in entries:
                lines.append(
                    f"| {gate} | {e.alpha} | {e.layer} | {e.threshold:.4f} | {e.exit_share:.3f} | {e.agreement:.3f} | "
                    f"{e.first_exit_share:.3f} | {e.first_exit_agreement:.3f} |"
                )
        return "\n".join(lines)


@torch.no_grad()
def head_scores(adapter: ModelAdapter, heads: ExitHeads, rows: torch.Tensor) -> dict[str, Any]:
    """Per token: each head's entropy, whether its token equals the model's greedy token, whether it is a real
    token (not the pruned head's "other"), and each probe's score (when the heads have probes)."""
    ent: dict[int, list[torch.Tensor]] = {layer: [] for layer in heads.layers}
    agree: dict[int, list[torch.Tensor]] = {layer: [] for layer in heads.layers}
    real: dict[int, list[torch.Tensor]] = {layer: [] for layer in heads.layers}
    probe: dict[int, list[torch.Tensor]] = {layer: [] for layer in heads.layers} if heads.has_probes else {}
    for start in range(0, rows.shape[0], 4):
        tr = trace(adapter, rows[start : start + 4], keep=heads.layers)
        final = adapter.logits(tr.layers[adapter.num_layers]).argmax(-1).flatten()
        for layer in heads.layers:
            head = heads.head(layer)
            logits = head(tr.layers[layer]).flatten(0, 1).float()
            logp = torch.log_softmax(logits, -1)
            ent[layer].append(-(logp.exp() * logp).sum(-1))
            token = head.class_to_token(logits.argmax(-1))
            agree[layer].append(token == final)
            real[layer].append(token >= 0)
            if layer in probe:
                probe[layer].append(heads.probe(layer)(tr.layers[layer]).flatten().float())
    return {
        "entropy": {k: torch.cat(v) for k, v in ent.items()},
        "agree": {k: torch.cat(v) for k, v in agree.items()},
        "real": {k: torch.cat(v) for k, v in real.items()},
        "probe": {k: torch.cat(v) for k, v in probe.items()},
    }


def _level(
    confidence: dict[int, torch.Tensor], scores: dict[str, Any], alpha: float, sign: float
) -> tuple[list[Threshold], list[FirstExits]]:
    """Thresholds of every layer at one level on `confidence` (lower = more confident), with first-exit shares
    (all layers gating), and the first exits of every subset of the layers. `sign` maps the threshold back to
    the gate's own scale (+1 entropy, -1 probe score)."""
    fired: dict[int, torch.Tensor] = {}
    partial = []
    for layer, conf in confidence.items():
        thr, k, acc = entropy_threshold(conf, scores["agree"][layer], alpha)
        fired[layer] = (conf <= thr) & scores["real"][layer]
        partial.append((layer, sign * thr, k / conf.numel(), acc))
    layers = tuple(confidence)
    shares, agreement = first_exits(fired, scores["agree"], layers)
    out = [
        Threshold(layer, alpha, thr, share, acc, first, first_agree)
        for (layer, thr, share, acc), first, first_agree in zip(partial, shares, agreement, strict=True)
    ]
    gate = "entropy" if sign > 0 else "probe"
    subsets = [layers] if len(layers) > MAX_SUBSET_LAYERS else _nonempty_subsets(layers)
    return out, [FirstExits(alpha, gate, sub, *first_exits(fired, scores["agree"], sub)) for sub in subsets]


def _nonempty_subsets(layers: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(x for i, x in enumerate(layers) if mask >> i & 1) for mask in range(1, 2 ** len(layers))]


def calibrate(scores: dict[str, Any], alphas: list[float], tokens: int, text: str) -> Calibration:
    entropy = dict(sorted(scores["entropy"].items()))
    probe = {k: -v for k, v in sorted(scores.get("probe", {}).items())}
    levels = [_level(entropy, scores, alpha, 1.0) for alpha in alphas]
    probe_levels = [_level(probe, scores, alpha, -1.0) for alpha in alphas] if probe else []
    overall = {layer: float(agree.float().mean()) for layer, agree in scores["agree"].items()}
    calib = Calibration([e for entries, _ in levels for e in entries], tokens, text, overall)
    calib.probe_entries = [e for entries, _ in probe_levels for e in entries]
    calib.subsets = [s for _, subs in (*levels, *probe_levels) for s in subs]
    return calib


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
