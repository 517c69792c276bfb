"""Training exit heads with the backbone frozen (arXiv 2407.21082): KL(p_final || q_head) on unlabeled text.

Because the backbone is frozen, its work is done once: `extract_features` runs the text through the model and
keeps, per token, the hidden states at the head layers, the final normed hidden state and the log-normaliser
of the final logits (fp16/fp32). The teacher's probabilities over any vocabulary subset S are then
exp(W_S h - lse), so training a pruned head never touches the 49k-row output matrix again, and many epochs
over the features cost little. Checkpoints hold the heads, the optimizer and the step, so training resumes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from beexformer.errors import CheckpointError
from beexformer.llm.adapters import ModelAdapter
from beexformer.llm.forward import trace
from beexformer.llm.heads import ExitHead, ExitHeads


@dataclass
class Features:
    """Frozen-backbone features of N token positions."""

    hidden: dict[int, torch.Tensor]  # layer -> [N, d] fp16 (fp32 where fp16 overflows), state after that many layers
    final_normed: torch.Tensor  # [N, d] fp16, final_norm(h_L)
    lse: torch.Tensor  # [N] fp32, logsumexp of the final logits
    argmax: torch.Tensor  # [N] int64, the model's own greedy token
    weight: torch.Tensor  # [N] fp32, sampling weight (self-distillation text can count more)

    @property
    def size(self) -> int:
        return int(self.lse.numel())

    @staticmethod
    def concat(parts: list[Features]) -> Features:
        layers = parts[0].hidden.keys()
        return Features(
            hidden={k: torch.cat([p.hidden[k] for p in parts]) for k in layers},
            final_normed=torch.cat([p.final_normed for p in parts]),
            lse=torch.cat([p.lse for p in parts]),
            argmax=torch.cat([p.argmax for p in parts]),
            weight=torch.cat([p.weight for p in parts]),
        )


def _compact(hidden: torch.Tensor) -> torch.Tensor:
    """float16 when every value fits, else float32: Gemma's residual stream exceeds float16's 65,504 in its
    deeper layers, and an infinite feature would make the loss NaN (torch.cat then promotes to float32)."""
    half = hidden.half()
    return half if bool(torch.isfinite(half).all()) else hidden.float()


def _final_logits(adapter: ModelAdapter, normed: torch.Tensor) -> torch.Tensor:
    return adapter.lm_head(normed.to(adapter.dtype))


@torch.no_grad()
def extract_features(
    adapter: ModelAdapter,
    rows: torch.Tensor,
    layers: list[int],
    batch_size: int = 4,
    weight: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> Features:
    """Run token rows [n, T] through the frozen model and keep what head training needs."""
    parts = []
    for start in range(0, rows.shape[0], batch_size):
        batch = rows[start : start + batch_size]
        tr = trace(adapter, batch, keep=layers)
        normed = adapter.final_norm(tr.layers[adapter.num_layers]).flatten(0, 1)
        logits = _final_logits(adapter, normed).float()
        parts.append(
            Features(
                hidden={k: _compact(tr.layers[k].flatten(0, 1)) for k in layers},
                final_normed=normed.half(),
                lse=torch.logsumexp(logits, dim=-1),
                argmax=logits.argmax(dim=-1),
                weight=torch.full((normed.shape[0],), float(weight)),
            )
        )
        if progress is not None:
            progress(min(start + batch_size, rows.shape[0]), rows.shape[0])
    return Features.concat(parts)


def top_tokens(argmax: torch.Tensor, count: int, vocab_size: int) -> torch.Tensor:
    """The `count` tokens the model predicts most often (ties by id), sorted by id."""
    freq = torch.bincount(argmax, minlength=vocab_size)
    return torch.sort(torch.topk(freq, min(count, vocab_size)).indices).values


def teacher_distribution(
    adapter: ModelAdapter, head: ExitHead, normed: torch.Tensor, lse: torch.Tensor
) -> torch.Tensor:
    """The final layer's distribution over the head's classes: p over the pruned vocabulary + the rest."""
    weight = adapter.lm_head.weight
    bias = getattr(adapter.lm_head, "bias", None)
    if head.pruned:
        ids = head.token_ids
        logits = normed.float() @ weight[ids].float().t()
        if bias is not None:
            logits = logits + bias[ids].float()
        probs = torch.exp(logits - lse[:, None])
        other = (1.0 - probs.sum(dim=-1, keepdim=True)).clamp_min(0.0)
        return torch.cat([probs, other], dim=-1)
    logits = _final_logits(adapter, normed).float()
    return torch.softmax(logits, dim=-1)


def kl_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student)."""
    logq = torch.log_softmax(student_logits.float(), dim=-1)
    logp = torch.log(teacher_probs.clamp_min(1e-12))
    return (teacher_probs * (logp - logq)).sum(dim=-1).mean()


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_tokens: int = 512
    lr: float = 1e-3
    warmup: int = 50
    checkpoint_every: int = 200
    seed: int = 0


@dataclass
class TrainReport:
    steps: int
    seconds: float
    losses: dict[int, float]  # layer -> mean KL over the last 50 steps
    history: list[dict[str, float]] = field(default_factory=list)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    # Linear warm-up, then cosine decay to 10 %: heads start from the model's own head, no long warm-up.
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def train_heads(
    adapter: ModelAdapter,
    heads: ExitHeads,
    features: Features,
    cfg: TrainConfig,
    checkpoint: Path | None = None,
    log: Callable[[str], None] = print,
) -> TrainReport:
    """Train every head on sampled feature positions; resume from `checkpoint` if it exists."""
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=0.0)
    step = 0
    if checkpoint is not None and checkpoint.exists():
        try:
            state = torch.load(checkpoint, weights_only=True)
            heads.load_state_dict(state["heads"])
            opt.load_state_dict(state["optimizer"])
            step = int(state["step"])
        except (RuntimeError, KeyError) as err:
            raise CheckpointError(f"cannot resume from {checkpoint}: {err}") from err
        log(f"resumed from {checkpoint} at step {step}")
    gen = torch.Generator().manual_seed(cfg.seed + step)
    recent: dict[int, list[float]] = {layer: [] for layer in heads.layers}
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    heads.train()
    while step < cfg.steps:
        idx = torch.multinomial(features.weight, cfg.batch_tokens, replacement=True, generator=gen)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        normed, lse = features.final_normed[idx], features.lse[idx]
        targets: dict[tuple[int, ...], torch.Tensor] = {}
        for layer in heads.layers:
            head = heads.head(layer)
            # Heads over the same vocabulary share one teacher distribution per step.
            key = tuple(head.token_ids[:8].tolist()) + (head.token_ids.numel(),)
            if key not in targets:
                with torch.no_grad():
                    targets[key] = teacher_distribution(adapter, head, normed, lse)
            target = targets[key]
            loss = kl_loss(head(features.hidden[layer][idx].to(adapter.dtype)), target)
            loss.backward()
            recent[layer] = (recent[layer] + [float(loss.detach())])[-50:]
        opt.step()
        step += 1
        if step % 25 == 0 or step == cfg.steps:
            means = {layer: sum(v) / len(v) for layer, v in recent.items()}
            history.append({"step": step, **{f"kl_{k}": v for k, v in means.items()}})
            rate = step / max(1e-9, time.perf_counter() - start)
            log(
                f"step {step}/{cfg.steps} "
                + " ".join(f"L{k}:{v:.3f}" for k, v in means.items())
                + f" ({rate:.1f} it/s)"
            )
        if checkpoint is not None and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"heads": heads.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp)
            tmp.replace(checkpoint)
    heads.eval()
    losses = {layer: sum(v) / max(1, len(v)) for layer, v in recent.items()}
    return TrainReport(step, time.perf_counter() - start, losses, history)
