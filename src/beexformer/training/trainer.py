"""The training loop: AdamW with warm-up and linear decay, soft-routing loss over all exits, evaluation at
every epoch end, the best model kept, atomic checkpoints, resume, and a clean stop on Ctrl-C.

Runs through Hugging Face Accelerate, so the same code runs on a CPU, one GPU, or many GPUs and nodes
(`accelerate launch -m beexformer.cli.main train ...`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from beexformer.bundle import TaskInfo, save_model_dir
from beexformer.config import BEExformerConfig
from beexformer.data.collate import BucketBatchSampler, EncodedDataset, make_collate
from beexformer.data.glue import GlueTask, get_task, iter_texts, load_split, load_split_hf
from beexformer.data.tokenizer import TextEncoder
from beexformer.errors import BeexError, ConfigError
from beexformer.evaluation import EvaluationReport, collect_exit_logits, evaluation_report
from beexformer.exits import ExitRule, build_exit_rule, check_rule_fits, default_exit_rule
from beexformer.model import BEExformer, binary_modules
from beexformer.pretrained import load_bert_weights, read_checkpoint
from beexformer.training import checkpoint as ckpt
from beexformer.training.arguments import HOLDOUT_CAP, PRETRAINED_MODEL, TrainingArguments
from beexformer.training.holdout import ThresholdChoice, choose_threshold, split_training_set
from beexformer.training.ramp import binarization_level, ramp_level

RUN_ARGS = "run.json"
LOG_FILE = "log.jsonl"
BEST = "best"


class TrainingInterrupted(BeexError):
    """Raised after a Ctrl-C / SIGTERM once the checkpoint is safely written."""

    exit_code = 130


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained on (for a resume mid-epoch)
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    elapsed_seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process: what the run costs on an otherwise idle machine
    history: list[dict[str, Any]] = field(default_factory=list)


class _StopRequest:
    """First Ctrl-C / SIGTERM: finish the current step, save, stop. Second one: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------------ data


def load_examples(task: GlueTask, split: str, args: TrainingArguments):
    if args.source == "hf":
        return load_split_hf(task, split)
    return load_split(task, split, args.data_dir)


def build_encoder(args: TrainingArguments, train_examples) -> TextEncoder:
    if args.tokenizer:
        return TextEncoder.from_pretrained(args.tokenizer)
    if args.teacher:
        from beexformer.training.distill import teacher_encoder

        return teacher_encoder(args.teacher)
    return TextEncoder.train_wordpiece(iter_texts(train_examples), vocab_size=args.vocab_size)


def encode(encoder: TextEncoder, examples, max_len: int, what: str, log) -> EncodedDataset:
    encoded = encoder.encode_batch(examples, max_len)
    if encoded.n_truncated:
        log(f"{what}: {encoded.n_truncated} of {len(examples)} inputs truncated to {max_len} tokens")
    return EncodedDataset.from_encoded(encoded, [ex.label for ex in examples])


# ------------------------------------------------------------------------------------------------ loop


def _lr_lambda(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(warmup, 1)
        return max(0.0, (total - step) / max(total - warmup, 1))

    return factor


def _param_groups(model: torch.nn.Module, args: TrainingArguments) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and position/segment tables (1-D parameters). The latent weights of
    1-bit layers, and the exit heads, get groups of their own only when their lr or decay differ from the
    rest: two groups as before otherwise, so that the optimizer state of older checkpoints still fits."""
    split = args.binary_lr != args.lr or args.binary_weight_decay != args.weight_decay
    latent = {id(m.weight) for _, m in binary_modules(model)} if split else set()
    heads = {id(p) for p in model.exits.parameters()} if args.head_lr != args.lr else set()
    groups: dict[str, dict[str, Any]] = {
        "decay": {"params": [], "weight_decay": args.weight_decay},
        "no_decay": {"params": [], "weight_decay": 0.0},
        "binary": {"params": [], "weight_decay": args.binary_weight_decay, "lr": args.binary_lr},
        "head_decay": {"params": [], "weight_decay": args.weight_decay, "lr": args.head_lr},
        "head_no_decay": {"params": [], "weight_decay": 0.0, "lr": args.head_lr},
    }
    for p in model.parameters():
        if id(p) in heads:
            key = "head_decay" if p.ndim >= 2 else "head_no_decay"
        elif id(p) in latent:
            key = "binary"
        else:
            key = "decay" if p.ndim >= 2 else "no_decay"
        groups[key]["params"].append(p)
    return [g for key, g in groups.items() if g["params"] or key in ("decay", "no_decay")]


def _start_at_label_mean(model: BEExformer, examples: list) -> None:
    """Regression exits start by answering the mean training score. From a bias of 0 the squared error on
    STS-B's 0-5 scale is dominated by the offset, which AdamW at a pretrained start's lr (1e-4 a step) takes
    hundreds of steps to remove while the body learns nothing useful about similarity."""
    mean = sum(float(ex.label) for ex in examples) / max(len(examples), 1)
    with torch.no_grad():
        for head in model.exits:
            head.fc2.bias.fill_(mean)


class Trainer:
    def __init__(self, args: TrainingArguments, resume: bool = False, log=print) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.args = args.validate()
        self.out = Path(args.output)
        self.ckpt_root = self.out / "checkpoints"
        self.log_fn = log
        self.accelerator = Accelerator()
        resume_from = self._check_output(resume)
        if args.num_threads:
            torch.set_num_threads(args.num_threads)
        set_seed(args.seed)
        self.task = get_task(args.task)
        train_examples = load_examples(self.task, "train", args)
        if args.max_train_samples:
            train_examples = train_examples[: args.max_train_samples]
        keep, held = split_training_set(train_examples, args.holdout, args.holdout_by, HOLDOUT_CAP, args.seed)
        heldout_examples = [train_examples[i] for i in held]
        train_examples = [train_examples[i] for i in keep]
        dev_examples = load_examples(self.task, "dev", args)
        checkpoint = None
        if resume_from is not None:
            self.encoder = TextEncoder.load(resume_from / "model")
            config = BEExformerConfig.load(resume_from / "model" / "config.json")
        elif args.init:
            checkpoint, self.encoder, config = self._pretrained_start()
        else:
            self.encoder = self._shared_encoder(train_examples)
            overrides = dict(args.model)
            config = BEExformerConfig(
                vocab_size=self.encoder.vocab_size,
                max_len=args.max_len,
                n_classes=self.task.num_labels,
                **overrides,
            ).validate()
        self.train_set = encode(self.encoder, train_examples, args.max_len, "train", self.log)
        self.dev_set = encode(self.encoder, dev_examples, args.max_len, "dev", self.log)
        self.heldout_set = None
        if held.size:
            self.heldout_set = encode(self.encoder, heldout_examples, args.max_len, "held-out", self.log)
        self.model = BEExformer(config)
        if args.start_from and resume_from is None:  # a resumed run has its own weights in the checkpoint
            from beexformer.training.warm_start import start_from

            # every weight comes from that run (start_from refuses one that leaves any out): the --init
            # checkpoint gives the shapes and the tokenizer, its weights are not loaded only to be replaced
            start_from(self.model, args.start_from)
        elif checkpoint is not None:
            load_bert_weights(self.model, checkpoint)
            if config.is_regression:
                _start_at_label_mean(self.model, train_examples)
        self.distiller = self._load_teacher(config)
        self.rule = _exit_rule_for(self.task, args.exit_rule, args.exit_threshold)
        self._build_optimisation()
        self.state = TrainerState()
        self._last_saved_step: int | None = None
        if resume_from is not None:
            self._restore(resume_from)

    def _load_teacher(self, config: BEExformerConfig):
        """The `--teacher` run as a frozen `distill.Distiller` on this process's device, or None."""
        if not self.args.teacher:
            return None
        from beexformer.training.distill import load_distiller

        args = self.args
        distiller = load_distiller(args.teacher, self.task, self.encoder, config, args.max_len, args.kd_weights())
        distiller.teacher.to(self.accelerator.device)
        return distiller

    def _pretrained_start(self):
        """(checkpoint, its tokenizer, the model config) of `--init`: shapes from the checkpoint, the training
        choices (bits, exits, ...) from the run's model overrides."""
        args = self.args
        if args.tokenizer:
            raise ConfigError("--tokenizer: a run with --init uses its checkpoint's tokenizer")
        checkpoint = read_checkpoint(args.init)
        config = checkpoint.model_config(self.task.num_labels, **{**PRETRAINED_MODEL, **args.model})
        if args.max_len > config.max_len:
            raise ConfigError(f"--max-len {args.max_len}: the --init checkpoint has {config.max_len} positions")
        return checkpoint, checkpoint.text_encoder(), config

    def _shared_encoder(self, train_examples) -> TextEncoder:
        """Build the tokenizer once, on the main process, and load that one everywhere: WordPiece training
        can break frequency ties differently in each process, and the processes must share one vocabulary."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return build_encoder(self.args, train_examples)
        shared = self.out / "tokenizer"
        if acc.is_main_process:
            build_encoder(self.args, train_examples).save(shared)
        acc.wait_for_everyone()
        return TextEncoder.load(shared)

    def log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            self.log_fn(message)

    def _check_output(self, resume: bool) -> Path | None:
        saved_args = self.out / RUN_ARGS
        if resume:
            latest = ckpt.latest_checkpoint(self.ckpt_root)
            if latest is None:
                raise ConfigError(f"{self.out}: no complete checkpoint to resume from (train without --resume)")
            return latest
        if ckpt.list_checkpoints(self.ckpt_root) or (self.out / BEST).exists():
            raise ConfigError(
                f"{self.out} already holds a run: pass --resume to continue it, or choose another --output"
            )
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            recorded = dataclasses.replace(self.args)
            if recorded.data_dir:  # so that --resume works from any working directory
                recorded.data_dir = str(Path(recorded.data_dir).resolve())
            recorded.save(saved_args)
        return None

    def _build_optimisation(self) -> None:
        args = self.args
        pad = self.encoder.pad_id
        self.sampler = BucketBatchSampler(self.train_set.lengths, args.batch_size, seed=args.seed)
        # Loaders get generators of their own: a DataLoader without one draws a seed from the global RNG
        # each time it is iterated, which would shift the dropout masks of a resumed run.
        train_loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            collate_fn=make_collate(pad),
            generator=torch.Generator().manual_seed(args.seed),
        )
        dev_loader = torch.utils.data.DataLoader(
            self.dev_set,
            batch_size=128,
            shuffle=False,
            collate_fn=make_collate(pad),
            generator=torch.Generator().manual_seed(args.seed),
        )
        self.heldout_loader = None
        if self.heldout_set is not None:
            # Sorted by length: little padding (the order of the logits does not matter to any metric).
            self.heldout_loader = torch.utils.data.DataLoader(
                self.heldout_set,
                batch_sampler=BucketBatchSampler(self.heldout_set.lengths, 128, shuffle=False, pool_factor=10**6),
                collate_fn=make_collate(pad),
                generator=torch.Generator().manual_seed(args.seed),
            )
        steps_per_epoch = len(self.sampler)
        by_epochs = max(1, math.ceil(args.epochs * steps_per_epoch))
        self.total_steps = args.max_steps or (min(by_epochs, args.step_cap) if args.step_cap else by_epochs)
        optimizer = torch.optim.AdamW(_param_groups(self.model, args), lr=args.lr)
        warmup = int(args.warmup_ratio * self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, self.total_steps))
        # The dev loader is not sharded: every process evaluates the whole (small) dev set, so all of them
        # take the same best-model and early-stopping decisions.
        self.dev_loader = dev_loader
        self.model, self.optimizer, self.train_loader, self.scheduler = self.accelerator.prepare(
            self.model, optimizer, train_loader, scheduler
        )

    # -------------------------------------------------------------------------------- checkpoints

    def _task_info(self) -> TaskInfo:
        return TaskInfo(
            task=self.task.name,
            label_list=list(self.task.label_list),
            max_len=self.args.max_len,
            exit_rule=self.rule.name,
            exit_threshold=getattr(self.rule, self.rule.threshold_name, None),
        )

    def save_checkpoint(self) -> Path:
        """Write checkpoint `step` atomically: every process writes its state, the main one renames."""
        acc = self.accelerator
        final = self.ckpt_root / ckpt.checkpoint_name(self.state.step)
        tmp = ckpt.temporary_name(final)
        if acc.is_main_process:
            ckpt.begin_directory(final)
        acc.wait_for_everyone()
        acc.save_state(str(tmp / "state"))
        acc.wait_for_everyone()  # every process's RNG state is in tmp before it is renamed
        if acc.is_main_process:
            save_model_dir(tmp / "model", acc.unwrap_model(self.model), self.encoder, self._task_info())
            (tmp / ckpt.STATE_FILE).write_text(json.dumps(self.state.__dict__, indent=1) + "\n")
            ckpt.commit_directory(tmp, final)
            ckpt.publish_checkpoint(self.ckpt_root, final, self.args.keep_checkpoints)
        acc.wait_for_everyone()
        self._last_saved_step = self.state.step
        return final

    def _restore(self, path: Path) -> None:
        self.accelerator.load_state(str(path / "state"))
        self.state = TrainerState(**ckpt.read_trainer_state(path))
        if self.args.exit_threshold is None:
            # The threshold chosen on the held-out slice at the last evaluation, not the rule's default: a
            # checkpoint written before the next evaluation (or at the end of a run resumed when complete)
            # must keep it.
            info = TaskInfo.load(path / "model")
            self.rule = _exit_rule_for(self.task, info.exit_rule, info.exit_threshold)
        self.log(f"resumed from {path} (step {self.state.step}, epoch {self.state.epoch})")

    # -------------------------------------------------------------------------------- evaluation

    def evaluate(self) -> dict[str, Any]:
        """Dev metrics for the log; the best model is picked on the held-out slice of train when there is one
        (else on dev, as runs from scratch always did), and so is the exit threshold stored with it."""
        model = self.accelerator.unwrap_model(self.model)
        heldout = self._choose_exit(model) if self.heldout_loader is not None else None
        data = collect_exit_logits(model, self.dev_loader)
        report = evaluation_report(self.task, model.config, data, self.rule)
        metric = report.metric_early_exit if heldout is None else heldout.metric_early_exit
        entry = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "metric": report.metric,
            "metric_early_exit": report.metric_early_exit,
            "metric_no_exit": report.metric_no_exit,
            "mean_exit_block": report.mean_exit_block,
            "flops_saved": report.flops_saved,
            "elapsed_seconds": self.state.elapsed_seconds,
            "cpu_seconds": self.state.cpu_seconds,
        }
        if heldout is not None:
            entry.update(
                exit_rule=self.rule.describe(),
                heldout_metric_early_exit=heldout.metric_early_exit,
                heldout_metric_no_exit=heldout.metric_no_exit,
                heldout_flops_saved=heldout.flops_saved,
                heldout_drop_bound=heldout.drop_bound,
            )
        self.state.history.append(entry)
        if self.accelerator.is_main_process:
            with open(self.out / LOG_FILE, "a") as f:
                f.write(json.dumps(entry) + "\n")
        if self.state.best_metric is None or metric > self.state.best_metric:
            self.state.best_metric, self.state.best_step = metric, self.state.step
            self.state.evals_without_improvement = 0
            if self.accelerator.is_main_process:
                self._save_best(model, report)
        else:
            self.state.evals_without_improvement += 1
        model.train()
        return entry

    def _choose_exit(self, model: BEExformer) -> ThresholdChoice:
        """Run the held-out slice; unless --exit-threshold fixed it, set the rule's threshold from it."""
        from beexformer.evaluation import rule_result
        from beexformer.exits import SWEEP_GRIDS, NeverExit

        data = collect_exit_logits(model, self.heldout_loader)
        name = self.rule.name
        if self.args.exit_threshold is not None or name not in SWEEP_GRIDS:
            result = rule_result(self.task, model.config, data, self.rule)
            no_exit = rule_result(self.task, model.config, data, NeverExit()).metric
            return ThresholdChoice(self.rule, no_exit, result.metric, result.flops_saved)
        choice = choose_threshold(self.task, model.config, data, name)
        self.rule = choice.rule
        return choice

    def _save_best(self, model: BEExformer, report: EvaluationReport) -> None:
        def fill(tmp: Path) -> None:
            save_model_dir(tmp, model, self.encoder, self._task_info())
            metrics = {"step": self.state.step, **report.to_dict()}
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")

        ckpt.write_directory_atomically(self.out / BEST, fill)

    # -------------------------------------------------------------------------------- the loop

    def _should_stop_early(self) -> bool:
        p = self.args.patience
        return p is not None and self.state.evals_without_improvement >= p

    def train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        args, acc, state = self.args, self.accelerator, self.state
        bar = tqdm(
            total=self.total_steps,
            initial=state.step,
            desc=f"train {self.task.name}",
            disable=not (args.progress and acc.is_main_process),
            dynamic_ncols=True,
        )
        self.model.train()
        last_eval_step = state.history[-1]["step"] if state.history else -1
        running = None
        started = time.perf_counter() - state.elapsed_seconds
        cpu_started = time.process_time() - state.cpu_seconds
        with _StopRequest() as stop:
            try:
                while state.step < self.total_steps and not self._should_stop_early():
                    self.sampler.set_epoch(state.epoch)
                    loader = self.train_loader
                    if state.batch_in_epoch:
                        loader = acc.skip_first_batches(self.train_loader, state.batch_in_epoch)
                    for batch in loader:
                        loss = self._step(batch)
                        running = loss if running is None else 0.98 * running + 0.02 * loss
                        state.step += 1
                        state.batch_in_epoch += 1
                        state.elapsed_seconds = time.perf_counter() - started
                        state.cpu_seconds = time.process_time() - cpu_started
                        bar.update(1)
                        bar.set_postfix(loss=f"{running:.4f}", dev=_fmt(state.best_metric), epoch=state.epoch)
                        self._log_progress(running)
                        epoch_done = state.batch_in_epoch >= len(self.train_loader)
                        if epoch_done:
                            state.epoch += 1
                            state.batch_in_epoch = 0
                        if epoch_done or (args.eval_every_steps and state.step % args.eval_every_steps == 0):
                            self.evaluate()
                            last_eval_step = state.step
                        if stop.requested:
                            raise KeyboardInterrupt
                        if epoch_done or state.step % args.save_every_steps == 0:
                            self.save_checkpoint()
                        if epoch_done or state.step >= self.total_steps or self._should_stop_early():
                            break
                if last_eval_step != state.step:
                    self.evaluate()
                    # It may have moved the exit threshold stored with the model (held-out choice): a
                    # checkpoint written at this step before it would carry the previous one, so write again.
                    self._last_saved_step = None
                if self._last_saved_step != state.step:
                    self.save_checkpoint()
            except KeyboardInterrupt:
                state.elapsed_seconds = time.perf_counter() - started
                path = self.save_checkpoint()
                bar.close()
                raise TrainingInterrupted(
                    f"stopped at step {state.step}; checkpoint {path} saved. "
                    f"Continue with: beex train --resume --output {self.out}"
                ) from None
        bar.close()
        return self.summary()

    @property
    def selected_on(self) -> str:
        """Which data picks the best model and the exit threshold: "held-out" (a slice of train) or "dev"."""
        return "held-out" if self.heldout_loader is not None else "dev"

    def _log_progress(self, running: float) -> None:
        """Without a progress bar (logs, CI), a line every 100 steps says where training is."""
        if not self.args.progress and self.state.step % 100 == 0:
            self.log(
                f"step {self.state.step}/{self.total_steps} epoch {self.state.epoch} loss {running:.4f} "
                f"best {self.selected_on} {_fmt(self.state.best_metric)} ({self.state.elapsed_seconds / 60:.1f} min)"
            )

    def _step(self, batch: dict[str, torch.Tensor]) -> float:
        level = ramp_level(self.state.step, self.total_steps, self.args.binarize_ramp)
        with binarization_level(self.model, level):
            if self.distiller is None:
                loss = self.model(**batch).loss
            else:
                out = self.model(**batch, output_internals=self.distiller.needs_internals)
                loss = self.distiller.loss(out, batch).total
            self.accelerator.backward(loss)
        if self.args.clip_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.args.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def summary(self) -> dict[str, Any]:
        s = self.state
        return {
            "task": self.task.name,
            "output": str(self.out),
            "steps": s.step,
            "epochs_completed": s.epoch,
            "best_metric": s.best_metric,
            "best_step": s.best_step,
            "selected_on": self.selected_on,
            "elapsed_seconds": s.elapsed_seconds,
            "cpu_seconds": s.cpu_seconds,
            "history": s.history,
        }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


# What may change when a run is resumed: its length, logging and where the data lives. Everything else
# (model, optimisation, data) must stay as it was for the resumed run to be the same experiment.
RESUMABLE_OVERRIDES = ("epochs", "max_steps", "progress", "num_threads", "save_every_steps", "keep_checkpoints",
                       "eval_every_steps", "patience", "data_dir")  # fmt: skip


def resume_arguments(output: str | Path, overrides: dict[str, Any]) -> TrainingArguments:
    """The arguments a run was started with (OUTPUT/run.json), with the given allowed overrides applied."""
    saved = TrainingArguments.load(Path(output) / RUN_ARGS)
    for name, value in overrides.items():
        if name in RESUMABLE_OVERRIDES:
            setattr(saved, name, value)
    saved.output = str(output)
    return saved.validate()


def train(args: TrainingArguments, resume: bool = False, log=print) -> dict[str, Any]:
    """Train (or resume) a run and return its summary; the best model is in `args.output`/best."""
    return Trainer(args, resume=resume, log=log).train()


def _exit_rule_for(task, name: str | None, threshold: float | None) -> ExitRule:
    """The rule that picks the best checkpoint and is stored with the model: the task's own by default; one
    that cannot judge the task's head (an entropy rule on regression) is refused, since it would pick the
    checkpoint by the earliest exit alone."""
    name = name or default_exit_rule(task.is_regression).name
    try:
        check_rule_fits(name, task.is_regression)
        return build_exit_rule(name, threshold)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{task.name}: {err}") from None
