"""Distillation (training/distill.py): the loss terms, a step that lowers them, and `--teacher` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from beexformer.cli.main import main
from beexformer.config import BEExformerConfig
from beexformer.model import BEExformer
from beexformer.training.distill import Distiller, KDWeights, attention_loss, hidden_loss, logit_loss

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "glue"
TINY = ["--set", "d_model=32", "--set", "d_ff=64", "--set", "n_heads=2", "--set", "n_blocks=3",
        "--set", "exit_hidden=8", "--vocab-size", "200", "--no-progress", "--batch-size", "2"]  # fmt: skip


def _pair(n_classes: int = 2, **student_fields):
    shape = dict(vocab_size=60, d_model=32, n_heads=2, d_ff=64, n_blocks=3, n_classes=n_classes, dropout=0.0)
    torch.manual_seed(0)
    teacher = BEExformer(BEExformerConfig(**shape).float_twin())
    student = BEExformer(BEExformerConfig(**shape, **student_fields))
    ids = torch.randint(5, 60, (8, 11))
    mask = torch.ones_like(ids)
    mask[:3, 7:] = 0  # some padding
    labels = torch.randint(0, 2, (8,)) if n_classes > 1 else torch.rand(8) * 5
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": labels}
    return teacher, student, batch


@pytest.mark.parametrize(
    ("n_classes", "fields"),
    [(2, {"act_bits": 4}), (2, {"act_bits": 1, "act_binarizer": "elastic"}), (1, {"act_bits": 2})],
    ids=["W1A4", "W1A1-elastic", "W1A2-regression"],
)
def test_a_distillation_step_lowers_the_kd_loss_and_leaves_the_teacher_alone(n_classes, fields):
    teacher, student, batch = _pair(n_classes, **fields)
    before_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
    distiller = Distiller(teacher, KDWeights())
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)

    def kd():
        return distiller.loss(student(**batch, output_internals=True), batch)

    first = kd()
    assert first.logits > 0 and first.hidden > 0 and first.attention > 0 and first.task == 0
    for _ in range(5):
        loss = kd().total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = kd()
    assert after.total < first.total
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before_teacher[k]) for k, v in teacher.state_dict().items())


def test_terms_are_zero_against_oneself_and_ignore_padding():
    teacher, _, batch = _pair()
    out = teacher(**batch, output_internals=True)
    mask = batch["attention_mask"]
    assert hidden_loss(out.hidden_states, out.hidden_states, mask) == 0
    assert attention_loss(out.attentions, out.attentions, mask).abs() < 1e-6
    moved = [h.clone() for h in out.hidden_states]
    for h in moved:
        h[mask == 0] += 5.0  # only padded positions differ
    assert hidden_loss(moved, out.hidden_states, mask) == 0
    # soft cross-entropy against itself is the entropy (its minimum over the student), regression: MSE
    logits = out.exit_logits
    p = logits.softmax(-1)
    entropy = -(p * p.log()).sum(-1).mean()
    assert torch.allclose(logit_loss(logits, logits, 1.0), entropy)
    assert logit_loss(torch.zeros(3, 4, 1), torch.full((3, 4, 1), 2.0), 1.0) == 4.0


def test_task_weight_adds_the_students_own_loss():
    teacher, student, batch = _pair(act_bits=4)
    out = student(**batch, output_internals=True)
    only_task = Distiller(teacher, KDWeights(task=1.0, logits=0, hidden=0, attention=0)).loss(out, batch)
    assert torch.equal(only_task.total, out.loss)


@pytest.fixture(scope="module")
def float_teacher(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "rte-float"
    code = main(["train", "--task", "rte", "--data-dir", str(FIXTURES), "--output", str(out), "--max-steps", "3",
                 "--float-twin", *TINY])  # fmt: skip
    assert code == 0
    return out


def test_teacher_run_teaches_a_w1a4_student_end_to_end(float_teacher, tmp_path):
    out = tmp_path / "rte-a4"
    code = main(["train", "--task", "rte", "--data-dir", str(FIXTURES), "--output", str(out), "--max-steps", "3",
                 "--act-bits", "4", "--teacher", str(float_teacher), "--kd-task", "0.5", *TINY])  # fmt: skip
    assert code == 0
    assert (out / "best" / "model.safetensors").is_file()
    assert BEExformer.from_pretrained(out / "best").config.act_bits == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "mrpc"], "trained on rte, this run is mrpc"),
        (["--task", "rte", "--set", "n_blocks=2"], "3 exits, the student 2"),
        (["--task", "rte", "--kd-temperature", "0"], "kd_temperature"),
    ],
)
def test_a_teacher_that_cannot_teach_is_a_one_line_error(float_teacher, argv, message, tmp_path, capsys):
    code = main(["train", "--data-dir", str(FIXTURES), "--output", str(tmp_path / "s"), "--max-steps", "1",
                 *TINY, *argv, "--teacher", str(float_teacher)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_teacher_with_another_tokenizer_is_refused(float_teacher):
    from beexformer.data.glue import get_task, iter_texts, load_split
    from beexformer.data.tokenizer import TextEncoder
    from beexformer.errors import ConfigError
    from beexformer.training.distill import load_distiller

    task = get_task("rte")
    other = TextEncoder.train_wordpiece(iter_texts(load_split(task, "train", FIXTURES)), vocab_size=150)
    config = BEExformer.from_pretrained(float_teacher / "best").config
    with pytest.raises(ConfigError, match="tokenizer differs"):
        load_distiller(float_teacher, task, other, config, 128, KDWeights())


def test_a_missing_teacher_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--task", "rte", "--data-dir", str(FIXTURES), "--output", str(tmp_path / "s"),
                 "--teacher", str(tmp_path / "nothing"), *TINY])  # fmt: skip
    assert code == 2
    assert "--teacher" in capsys.readouterr().err


def test_a_distilled_pretrained_start_trains_ten_epochs_unless_told():
    from beexformer.training.arguments import TrainingArguments

    assert TrainingArguments(init="minilm", teacher="runs/float").validate().epochs == 10.0
    assert TrainingArguments(init="minilm").validate().epochs == 3.0
    assert TrainingArguments(teacher="runs/float").validate().epochs == 1.0  # from scratch: its own default
    assert TrainingArguments(init="minilm", teacher="runs/float", epochs=2.0).validate().epochs == 2.0
    assert TrainingArguments(init="minilm", teacher="runs/float").validate().step_cap == 2000
