"""Knowledge distillation from a teacher run (`beex train --teacher RUN`): BiT / TinyBERT style.

The teacher is a BEExformer fine-tuned on the same task with the same tokenizer (typically the float twin,
`--init minilm --float-twin`, or the previous stage of a staged schedule). It runs in the same process, in eval
mode (no dropout) and without gradients, on exactly the student's batch. The loss is

    L = w_task * L_task + w_logits * L_logits + w_hidden * L_hidden + w_attention * L_attention

- L_task: the student's own soft-routing loss on the labels (`loss.py`).
- L_logits: mean over exits c of the soft cross-entropy T^2 * CE(softmax(t_c / T), softmax(s_c / T)) between
  teacher exit c and student exit c (squared error of the two scores for regression, STS-B).
- L_hidden: mean over the C + 1 hidden states (embedding output, then every block's) of the squared error,
  averaged over real tokens and features.
- L_attention: mean over blocks of KL(teacher || student) of each real query token's attention distribution,
  averaged over heads and real query tokens.

Hidden-state and attention matching pair block c with block c, so they need the same depth, width and heads;
the logits need the same number of exits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from beexformer.errors import ConfigError
from beexformer.model import BEExformer, BEExformerOutput


@dataclass
class KDWeights:
    task: float = 0.0  # pure distillation by default, as BiT and TinyBERT
    logits: float = 1.0
    hidden: float = 1.0
    attention: float = 1.0
    temperature: float = 1.0

    def validate(self) -> KDWeights:
        for name in ("task", "logits", "hidden", "attention"):
            if getattr(self, name) < 0:
                raise ConfigError(f"kd_{name}={getattr(self, name)}: must be >= 0")
        if self.temperature <= 0:
            raise ConfigError(f"kd_temperature={self.temperature}: must be > 0")
        if not any((self.task, self.logits, self.hidden, self.attention)):
            raise ConfigError("every distillation weight is 0: nothing to train on")
        return self


@dataclass
class KDLoss:
    total: Tensor
    task: Tensor
    logits: Tensor
    hidden: Tensor
    attention: Tensor

    def parts(self) -> dict[str, float]:
        """The terms as floats, for the training log."""
        names = ("total", "task", "logits", "hidden", "attention")
        return {name: float(getattr(self, name).detach()) for name in names}


def logit_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Mean over exits of T^2 * soft cross-entropy, or of the squared error for one output (regression)."""
    if student.shape[-1] == 1:
        return ((student - teacher) ** 2).mean()
    target = F.softmax(teacher / temperature, dim=-1)
    ce = -(target * F.log_softmax(student / temperature, dim=-1)).sum(dim=-1)  # [C, B]
    return temperature**2 * ce.mean()


def hidden_loss(student: list[Tensor], teacher: list[Tensor], mask: Tensor) -> Tensor:
    """Mean over states of the squared error averaged over real tokens (mask [B, T]) and features."""
    weight = mask.to(student[0].dtype).unsqueeze(-1)
    denominator = weight.sum() * student[0].shape[-1]
    errors = [(((s - t) ** 2) * weight).sum() / denominator for s, t in zip(student, teacher, strict=True)]
    return torch.stack(errors).mean()


def attention_loss(student: list[Tensor], teacher: list[Tensor], mask: Tensor) -> Tensor:
    """Mean over blocks of KL(teacher || student) per real query row, averaged over heads and real queries.
    Padded keys have probability 0 on both sides and add nothing."""
    rows = mask.to(student[0].dtype)[:, None, :]  # [B, 1, T]: real query tokens
    kls = []
    for s, t in zip(student, teacher, strict=True):
        kl = (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum(dim=-1)  # [B, h, T]
        kls.append((kl * rows).sum() / (rows.sum() * s.shape[1]))
    return torch.stack(kls).mean()


class Distiller:
    """Holds the frozen teacher; `loss(student_out, batch)` returns the weighted distillation loss."""

    def __init__(self, teacher: BEExformer, weights: KDWeights) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weights = weights.validate()

    @property
    def needs_internals(self) -> bool:
        return bool(self.weights.hidden or self.weights.attention)

    def teacher_outputs(self, batch: dict[str, Tensor]) -> BEExformerOutput:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            return self.teacher(**inputs, output_internals=self.needs_internals)

    def loss(self, student: BEExformerOutput, batch: dict[str, Tensor]) -> KDLoss:
        w = self.weights
        teacher = self.teacher_outputs(batch)
        mask = batch["attention_mask"]
        zero = student.exit_logits.new_zeros(())
        task = student.loss if w.task and student.loss is not None else zero
        logits = logit_loss(student.exit_logits, teacher.exit_logits, w.temperature) if w.logits else zero
        hidden = hidden_loss(student.hidden_states, teacher.hidden_states, mask) if w.hidden else zero
        attention = attention_loss(student.attentions, teacher.attentions, mask) if w.attention else zero
        total = w.task * task + w.logits * logits + w.hidden * hidden + w.attention * attention
        return KDLoss(total, task, logits, hidden, attention)


def check_teacher(teacher_dir: Path, teacher: BEExformer, info, encoder, task_name: str, label_list, config,
                  max_len: int, weights: KDWeights) -> None:  # fmt: skip
    """One-line ConfigError when the teacher cannot teach this student: another task, other labels, another
    tokenizer, too few positions, or (for the matching terms) another depth, width or number of heads."""
    where = f"--teacher {teacher_dir}"
    t = teacher.config
    if info.task != task_name:
        raise ConfigError(f"{where}: the teacher was trained on {info.task}, this run is {task_name}")
    if list(info.label_list) != list(label_list):
        raise ConfigError(f"{where}: the teacher's labels {info.label_list} differ from this task's {label_list}")
    if encoder is not None and not same_tokenizer(encoder, _teacher_tokenizer(teacher_dir)):
        raise ConfigError(f"{where}: the teacher's tokenizer differs from this run's (use the same --init/tokenizer)")
    if t.max_len < max_len:
        raise ConfigError(f"{where}: the teacher has {t.max_len} positions, this run uses --max-len {max_len}")
    if t.n_blocks != config.n_blocks:
        raise ConfigError(f"{where}: the teacher has {t.n_blocks} exits, the student {config.n_blocks}")
    if (weights.hidden or weights.attention) and (t.d_model, t.n_heads) != (config.d_model, config.n_heads):
        raise ConfigError(
            f"{where}: hidden-state and attention matching need the same width and heads "
            f"(teacher {t.d_model}/{t.n_heads}, student {config.d_model}/{config.n_heads}); "
            "set --kd-hidden 0 --kd-attention 0 to distil the logits only"
        )


def same_tokenizer(a, b) -> bool:
    """Same vocabulary, normalisation and special tokens (compared as parsed JSON: the key order of a saved
    tokenizer.json may differ from the one built in memory)."""
    return json.loads(a.tokenizer.to_str()) == json.loads(b.tokenizer.to_str()) and (
        a.cls_token, a.sep_token, a.pad_token) == (b.cls_token, b.sep_token, b.pad_token)  # fmt: skip


def _teacher_tokenizer(teacher_dir: Path):
    from beexformer.data.tokenizer import TextEncoder

    return TextEncoder.load(teacher_dir)


def teacher_model_dir(teacher_run: str | Path) -> Path:
    """The model directory of `--teacher RUN` (RUN/best or RUN itself); a one-line error if there is none."""
    from beexformer.bundle import resolve_model_dir
    from beexformer.errors import CheckpointError

    try:
        return resolve_model_dir(teacher_run)
    except CheckpointError as err:
        raise ConfigError(f"--teacher: {err}") from None


def teacher_encoder(teacher_run: str | Path):
    """The teacher's tokenizer: a student from scratch shares it, because WordPiece training breaks ties
    differently from one run to the next and the two must see the same token ids."""
    return _teacher_tokenizer(teacher_model_dir(teacher_run))


def load_distiller(teacher_run: str | Path, task, encoder, config, max_len: int, weights: KDWeights) -> Distiller:
    """The Distiller of `--teacher RUN` (a run or model directory) for a student of `config` on `task`."""
    from beexformer.bundle import TaskInfo

    teacher_dir = teacher_model_dir(teacher_run)
    teacher = BEExformer.from_pretrained(teacher_dir)
    info = TaskInfo.load(teacher_dir)
    check_teacher(teacher_dir, teacher, info, encoder, task.name, list(task.label_list), config, max_len, weights)
    return Distiller(teacher, weights)
