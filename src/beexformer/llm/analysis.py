"""Own-head exit analysis (arXiv 2412.01455): the model's own norm + LM head applied at every layer and after
the attention sub-layer of every block, on a text file.

Exit points are ordered by depth: 1.attn, 1, 2.attn, 2, ..., L (L is the model's own output). Per exit
point: agreement of its argmax with the final layer's and perplexity on the text. Per token: the oracle exit,
the first exit point from which the argmax equals the final one at every deeper point; its distribution gives
the ideal speed-up L / E[depth]. Each gating function (confidence, entropy, saturation) is scored by where it
would exit compared with the oracle, and by the agreement and mean depth that results.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from beexformer.llm.adapters import ModelAdapter
from beexformer.llm.forward import trace
from beexformer.llm.text import chunk, tokenize_file

CONFIDENCE_LEVELS = (0.5, 0.7, 0.9, 0.95, 0.99)
ENTROPY_LEVELS = (0.05, 0.1, 0.5, 1.0, 2.0)
SATURATION_LEVELS = (1, 2, 3, 4)


@dataclass(frozen=True)
class ExitPoint:
    name: str  # "12" after layer 12, "12.attn" after the attention sub-layer of layer 12
    depth: float  # layers of compute: 12 or 11.5
    agreement: float
    perplexity: float


@dataclass(frozen=True)
class GateScore:
    gate: str  # "confidence", "entropy" or "saturation"
    level: float
    agreement: float  # exited token == final token
    mean_depth: float
    at_oracle: float  # share of tokens exiting exactly at their oracle exit point
    too_early: float  # before it (the token may still be right, but is not stable yet)
    too_late: float


@dataclass
class AnalysisReport:
    tokens: int
    num_layers: int
    use_norm: bool
    points: list[ExitPoint]
    oracle_histogram: dict[str, float]  # exit point -> share of tokens
    oracle_mean_depth: float
    gates: list[GateScore] = field(default_factory=list)

    @property
    def ideal_speedup(self) -> float:
        return self.num_layers / max(self.oracle_mean_depth, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ideal_speedup"] = self.ideal_speedup
        return data

    def to_markdown(self) -> str:
        out = [
            f"own-head exits on {self.tokens} tokens ({'with' if self.use_norm else 'without'} final norm), "
            f"oracle mean depth {self.oracle_mean_depth:.2f} of {self.num_layers} layers, "
            f"ideal speed-up {self.ideal_speedup:.2f}x",
            "",
            "| exit | agreement | perplexity | oracle share |",
            "|---|---|---|---|",
        ]
        for p in self.points:
            share = self.oracle_histogram.get(p.name, 0.0)
            out.append(f"| {p.name} | {p.agreement:.3f} | {p.perplexity:.4g} | {share:.3f} |")
        out += [
            "",
            "| gate | level | agreement | mean depth | at oracle | too early | too late |",
            "|---|---|---|---|---|---|---|",
        ]
        for g in self.gates:
            out.append(
                f"| {g.gate} | {g.level} | {g.agreement:.3f} | {g.mean_depth:.2f} | {g.at_oracle:.3f} | "
                f"{g.too_early:.3f} | {g.too_late:.3f} |"
            )
        return "\n".join(out)


def _exit_states(adapter: ModelAdapter, rows: torch.Tensor, sublayer: bool) -> list[tuple[str, float, torch.Tensor]]:
    tr = trace(adapter, rows, sublayer=sublayer)
    points = []
    for layer in range(1, adapter.num_layers + 1):
        if sublayer:
            points.append((f"{layer}.attn", layer - 0.5, tr.attn[layer]))
        points.append((str(layer), float(layer), tr.layers[layer]))
    return points


@torch.no_grad()
def token_stats(adapter: ModelAdapter, rows: torch.Tensor, use_norm: bool, sublayer: bool) -> dict[str, Any]:
    """Per exit point and token: argmax, max prob, entropy, log prob of the true next token."""
    names, depths = [], []
    argmax, conf, ent, nll = [], [], [], []
    for start in range(0, rows.shape[0], 2):
        batch = rows[start : start + 2]
        targets = batch[:, 1:].flatten()
        per_point = _exit_states(adapter, batch, sublayer)
        if not names:
            names = [n for n, _, _ in per_point]
            depths = [d for _, d, _ in per_point]
        a, c, e, n = [], [], [], []
        for index, (_, _, hidden) in enumerate(per_point):
            # The model's own output (last point) always goes through the final norm.
            norm = use_norm or index == len(per_point) - 1
            logp = torch.log_softmax(adapter.logits(hidden[:, :-1], use_norm=norm).float(), -1).flatten(0, 1)
            a.append(logp.argmax(-1))
            c.append(logp.max(-1).values.exp())
            e.append(-(logp.exp() * logp).sum(-1))
            n.append(-logp.gather(1, targets[:, None])[:, 0])
        argmax.append(torch.stack(a))
        conf.append(torch.stack(c))
        ent.append(torch.stack(e))
        nll.append(torch.stack(n))
    return {
        "names": names,
        "depths": torch.tensor(depths),
        "argmax": torch.cat(argmax, 1),
        "confidence": torch.cat(conf, 1),
        "entropy": torch.cat(ent, 1),
        "nll": torch.cat(nll, 1),
    }


def oracle_exit(argmax: torch.Tensor) -> torch.Tensor:
    """Index of the first exit point from which argmax [P, N] equals the last one at every deeper point."""
    same = argmax == argmax[-1:]
    # Reverse cumulative AND: stable[p] is True iff same[p:] are all True.
    stable = torch.flip(torch.cumprod(torch.flip(same.int(), [0]), 0), [0]).bool()
    return stable.int().argmax(0)


def _first_true(fires: torch.Tensor) -> torch.Tensor:
    """Index of the first True per column of [P, N]; the last point where none fires."""
    fires = fires.clone()
    fires[-1] = True
    return fires.int().argmax(0)


def score_gates(stats: dict[str, Any]) -> list[GateScore]:
    argmax, depths = stats["argmax"], stats["depths"]
    oracle = oracle_exit(argmax)
    cols = torch.arange(argmax.shape[1])
    rules: list[tuple[str, float, torch.Tensor]] = []
    rules += [("confidence", lv, stats["confidence"] >= lv) for lv in CONFIDENCE_LEVELS]
    rules += [("entropy", lv, stats["entropy"] <= lv) for lv in ENTROPY_LEVELS]
    from beexformer.llm.gates import saturation

    rules += [("saturation", float(n), saturation(argmax, n)) for n in SATURATION_LEVELS]
    scores = []
    for name, level, fires in rules:
        chosen = _first_true(fires)
        scores.append(
            GateScore(
                gate=name,
                level=level,
                agreement=float((argmax[chosen, cols] == argmax[-1]).float().mean()),
                mean_depth=float(depths[chosen].mean()),
                at_oracle=float((chosen == oracle).float().mean()),
                too_early=float((chosen < oracle).float().mean()),
                too_late=float((chosen > oracle).float().mean()),
            )
        )
    return scores


def build_report(stats: dict[str, Any], num_layers: int, use_norm: bool) -> AnalysisReport:
    argmax = stats["argmax"]
    tokens = int(argmax.shape[1])
    agreement = (argmax == argmax[-1:]).float().mean(1)
    ppl = stats["nll"].mean(1).exp()
    points = [
        ExitPoint(name, float(d), float(a), float(p) if math.isfinite(float(p)) else float("inf"))
        for name, d, a, p in zip(stats["names"], stats["depths"].tolist(), agreement, ppl, strict=True)
    ]
    oracle = oracle_exit(argmax)
    counts = torch.bincount(oracle, minlength=len(points)).float() / tokens
    hist = {points[i].name: float(counts[i]) for i in range(len(points)) if counts[i] > 0}
    mean_depth = float(stats["depths"][oracle].mean())
    return AnalysisReport(tokens, num_layers, use_norm, points, hist, mean_depth, score_gates(stats))


def analyze_file(
    adapter: ModelAdapter,
    tokenizer: Any,
    path: str,
    max_tokens: int = 8192,
    seq_len: int = 256,
    use_norm: bool = True,
    sublayer: bool = True,
) -> AnalysisReport:
    rows = chunk(tokenize_file(tokenizer, path, max_tokens), seq_len)
    return build_report(token_stats(adapter, rows, use_norm, sublayer), adapter.num_layers, use_norm)


def plot_agreement(report: AnalysisReport, path: str | Path) -> None:
    """PNG: agreement with the final layer per exit point (layers and attention sub-layers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    layers = [p for p in report.points if not p.name.endswith(".attn")]
    subs = [p for p in report.points if p.name.endswith(".attn")]
    ax.plot([p.depth for p in layers], [p.agreement for p in layers], "o-", label="after layer")
    if subs:
        ax.plot([p.depth for p in subs], [p.agreement for p in subs], "x--", label="after attention sub-layer")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("agreement with final layer (argmax)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"own-head exits, {report.tokens} tokens ({'final norm' if report.use_norm else 'no norm'})")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
