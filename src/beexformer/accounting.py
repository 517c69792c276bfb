"""What a model costs: 1-bit vs 32-bit parameters, bytes stored packed vs float32, FLOPs and binary ops.

Conventions (docs/design.md section 7):
- Size ratio (`FileSizes.size_ratio`, the one figure called "size ratio" anywhere in the project): bytes of the
  float32 checkpoint file (`model.safetensors`) over bytes of the packed file (`beex export`), both real files.
- Parameter accounting (`SizeReport.accounted_ratio`, never called "size ratio"): 1 bit per binarized weight,
  plus one 32-bit scale per output row (or per tensor) of each binarized matrix, 32 bits for everything else,
  against 32 bits for every parameter. It leaves out what a file adds (word padding, the tokenizer, headers),
  so it is a little higher than the size ratio; it exists for configurations that have no files yet.
- Ops per sample of T tokens. A float multiply-accumulate counts 2 FLOPs. A W1A1 multiply-accumulate is one
  binary op (BOP; XNOR + popcount); W1A2 and W1A4 are 2 and 4 BOPs (one XNOR-popcount per bit-plane of the
  activation codes). A W1A32 multiply-accumulate is a sign-selected addition: 1 FLOP.
  The common single figure is FLOPs + BOPs / 64 (BiBERT, BiT).
- Expected cost with early exit: a sample leaving at block c pays the embeddings, blocks 1..c and exits
  1..c; "FLOPs saved" = 1 - sum_i F_i(exit_i) / sum_i F_i(C), each sample at its own length.

No torch import: the model summary duck-types modules (`is_binary`, `weight`), so it also serves the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from beexformer.config import BEExformerConfig


@dataclass
class ParamRow:
    """One module that owns parameters."""

    name: str
    kind: str  # class name
    binary_params: int  # stored as 1 bit
    float_params: int  # stored as 32 bits (biases, norms, float layers)
    scale_params: int  # 32-bit scales that binarization adds (alpha per row or per tensor)
    int8_params: int = 0  # stored as 8 bits (an int8 token table; its row scales count in scale_params)

    @property
    def packed_bits(self) -> int:
        return self.binary_params + 8 * self.int8_params + 32 * (self.float_params + self.scale_params)

    @property
    def float32_bits(self) -> int:
        return 32 * (self.binary_params + self.int8_params + self.float_params)


@dataclass(frozen=True)
class FileSizes:
    """Bytes on disk of the two files a trained model has: THE size ratio of the project is their quotient."""

    float32_checkpoint_bytes: int  # model.safetensors as the trainer writes it (float32 latent weights)
    packed_file_bytes: int  # the file `beex export` writes: bits, scales, float32 rest, tokenizer, header
    tokenizer_bytes: int  # the zlib-compressed tokenizer inside the packed file
    # False only for packed files written before the export recorded its checkpoint's size: then the
    # checkpoint is taken as 4 bytes per parameter (its few KB of safetensors header left out).
    checkpoint_measured: bool = True

    @property
    def size_ratio(self) -> float:
        return self.float32_checkpoint_bytes / self.packed_file_bytes

    @property
    def size_ratio_without_tokenizer(self) -> float:
        return self.float32_checkpoint_bytes / (self.packed_file_bytes - self.tokenizer_bytes)

    def describe(self) -> str:
        estimated = "" if self.checkpoint_measured else " (estimated: 4 bytes per parameter)"
        return (
            f"size ratio {self.size_ratio:.2f}x: float32 checkpoint {self.float32_checkpoint_bytes:,} bytes"
            f"{estimated} / packed file {self.packed_file_bytes:,} bytes"
        )

    def to_dict(self) -> dict:
        return {
            "float32_checkpoint_bytes": self.float32_checkpoint_bytes,
            "packed_file_bytes": self.packed_file_bytes,
            "tokenizer_bytes": self.tokenizer_bytes,
            "checkpoint_measured": self.checkpoint_measured,
            "size_ratio": self.size_ratio,
            "size_ratio_without_tokenizer": self.size_ratio_without_tokenizer,
        }


@dataclass
class SizeReport:
    """Parameter accounting (no files): what the parameters weigh packed against float32."""

    rows: list[ParamRow]

    @property
    def binary_params(self) -> int:
        return sum(r.binary_params for r in self.rows)

    @property
    def float_params(self) -> int:
        return sum(r.float_params for r in self.rows)

    @property
    def scale_params(self) -> int:
        return sum(r.scale_params for r in self.rows)

    @property
    def int8_params(self) -> int:
        return sum(r.int8_params for r in self.rows)

    @property
    def total_params(self) -> int:
        return self.binary_params + self.int8_params + self.float_params

    @property
    def packed_bytes(self) -> float:
        return sum(r.packed_bits for r in self.rows) / 8

    @property
    def float32_bytes(self) -> int:
        return 4 * self.total_params

    @property
    def accounted_ratio(self) -> float:
        """Float32 bits of the parameters over their packed bits: not the size ratio (see `FileSizes`)."""
        return self.float32_bytes / self.packed_bytes

    @property
    def binary_share(self) -> float:
        return self.binary_params / max(self.total_params, 1)

    def to_dict(self) -> dict:
        return {
            "binary_params": self.binary_params,
            "float_params": self.float_params,
            "int8_params": self.int8_params,
            "scale_params": self.scale_params,
            "total_params": self.total_params,
            "binary_share": self.binary_share,
            "accounted_packed_bytes": self.packed_bytes,
            "accounted_float32_bytes": self.float32_bytes,
            "accounted_ratio": self.accounted_ratio,
        }

    def format_table(self, group_depth: int | None = None) -> str:
        """A larq-style summary: one line per module (or per name prefix of `group_depth` parts)."""
        rows = self.rows if group_depth is None else _group(self.rows, group_depth)
        width = max([len(r.name) for r in rows] + [12])
        columns = (
            f"{'1-bit params':>12}  {'8-bit params':>12}  {'32-bit params':>13}  {'scales':>8}  {'packed KiB':>10}"
        )
        head = f"{'layer':<{width}}  {columns}"
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append(
                f"{r.name:<{width}}  {r.binary_params:>12,}  {r.int8_params:>12,}  {r.float_params:>13,}"
                f"  {r.scale_params:>8,}"
                f"  {r.packed_bits / 8192:>10.1f}"
            )
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<{width}}  {self.binary_params:>12,}  {self.int8_params:>12,}  {self.float_params:>13,}"
            f"  {self.scale_params:>8,}  {self.packed_bytes / 1024:>10.1f}"
        )
        lines.append(
            f"1-bit share of parameters: {100 * self.binary_share:.2f} %   parameter accounting: "
            f"float32 {self.float32_bytes / 2**20:.2f} MiB / packed {self.packed_bytes / 2**20:.3f} MiB = "
            f"{self.accounted_ratio:.2f}x (parameters only, not the size ratio of the files)"
        )
        return "\n".join(lines)


def _group(rows: Sequence[ParamRow], depth: int) -> list[ParamRow]:
    grouped: dict[str, ParamRow] = {}
    for r in rows:
        key = ".".join(r.name.split(".")[:depth])
        g = grouped.setdefault(key, ParamRow(key, "group", 0, 0, 0))
        g.binary_params += r.binary_params
        g.int8_params += r.int8_params
        g.float_params += r.float_params
        g.scale_params += r.scale_params
    return list(grouped.values())


def size_report(model) -> SizeReport:
    """Count the real parameters of a (torch) model: 1-bit weights, their scales, and 32-bit rest."""
    rows = []
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        binary = int8 = float_ = scales = 0
        for pname, p in own:
            if pname == "weight" and getattr(module, "is_binary", False):
                binary += p.numel()
                per_tensor = getattr(module, "weight_scale_mode", "row") == "tensor"
                scales += 1 if per_tensor else p.shape[0]
            elif pname == "weight" and getattr(module, "bits", 32) == 8:  # the int8 token table
                int8 += p.numel()
                scales += p.shape[0]
            else:
                float_ += p.numel()
        rows.append(ParamRow(name, type(module).__name__, binary, float_, scales, int8))
    return SizeReport(rows)


# ---------------------------------------------------------------- ops


@dataclass
class Ops:
    flops: float = 0.0
    bops: float = 0.0

    def __add__(self, other: Ops) -> Ops:
        return Ops(self.flops + other.flops, self.bops + other.bops)

    def __mul__(self, k: float) -> Ops:
        return Ops(self.flops * k, self.bops * k)

    @property
    def combined(self) -> float:
        """FLOPs + BOPs / 64, the convention of BiBERT and BiT."""
        return self.flops + self.bops / 64


def bits_label(config: BEExformerConfig) -> str:
    """ "W1A4 (LSQ)", "W1A1 (elastic)", "W1A1", "W1A32": the widths of the linear layers inside the blocks."""
    label = f"W{config.weight_bits}A{config.act_bits}"
    kept = f", {config.act_outliers} float channels" if config.act_outliers and config.act_bits < 32 else ""
    if config.act_bits in (2, 4):
        return f"{label} (LSQ{kept})"
    if config.act_bits == 1 and config.act_binarizer == "elastic":
        return f"{label} (elastic{kept})"
    return label


def _linear_ops(macs: float, weight_bits: int, act_bits: int) -> Ops:
    if weight_bits == 1 and act_bits < 32:
        return Ops(0.0, act_bits * macs)  # one XNOR-popcount per bit-plane of the activation codes
    if weight_bits == 1:
        return Ops(macs, 0.0)
    return Ops(2 * macs, 0.0)


@dataclass
class OpsBreakdown:
    embeddings: Ops
    blocks: list[Ops] = field(default_factory=list)
    exits: list[Ops] = field(default_factory=list)

    def up_to(self, block: int) -> Ops:
        """Cost of a sample that leaves at `block` (1-based)."""
        total = self.embeddings
        for c in range(block):
            total = total + self.blocks[c] + self.exits[c]
        return total

    @property
    def full(self) -> Ops:
        return self.up_to(len(self.blocks))


def ops_per_sample(config: BEExformerConfig, seq_len: int) -> OpsBreakdown:
    """FLOPs and BOPs of one sample of `seq_len` real tokens, per block and per exit."""
    T, d, f, h = seq_len, config.d_model, config.d_ff, config.n_heads
    wb, ab = config.weight_bits, config.act_bits
    layer_norm = Ops(8.0 * T * d)
    embeddings = Ops(2.0 * T * d) + layer_norm  # token + position (+ segment) sums, then LayerNorm
    attention = (
        _linear_ops(4.0 * T * d * d, wb, ab)  # Q, K, V, O projections
        + Ops(4.0 * T * T * d)  # Q K^T and weights @ V, float
        + Ops(5.0 * h * T * T)  # scale, mask, softmax
    )
    if config.ffn == "slfn":
        ffn = _linear_ops(4.0 * T * d * f, wb, ab) + Ops(T * (8.0 * f + d))  # sigmoid, tanh, product
    else:
        ffn = _linear_ops(2.0 * T * d * f, wb, ab) + Ops(8.0 * T * f)  # gelu
    block = attention + ffn + layer_norm * 2 + Ops(2.0 * T * d)  # two residual sums
    if config.act_outliers and wb == 1 and ab < 32:
        # input channels kept at full precision: C float multiply-accumulates per output of every linear
        outputs = 4 * d + (2 * f + 2 * d if config.ffn == "slfn" else f + d)
        if config.ffn == "ffn_slfn":
            outputs += 2 * f + 2 * d
        block = block + Ops(float(T * config.act_outliers * outputs))
    k = config.n_classes
    exit_head = Ops(T * d) + _linear_ops(d * config.exit_hidden, config.exit_bits, 32)
    exit_head = exit_head + Ops(2.0 * config.exit_hidden * k + config.exit_hidden)
    n = config.n_blocks
    return OpsBreakdown(embeddings, [block] * n, [exit_head] * n)


@dataclass
class ExitCost:
    flops_full: float  # combined FLOPs with every sample running all blocks
    flops_early_exit: float  # combined FLOPs with each sample leaving at its exit block
    saved: float  # 1 - early / full
    histogram: list[int]  # samples leaving at block 1..C
    mean_exit_block: float


def expected_cost(config: BEExformerConfig, exit_blocks: Iterable[int], seq_lens: Iterable[int]) -> ExitCost:
    """Cost of a set of samples, each at its own length and exit block (docs/design.md section 7)."""
    blocks = np.asarray(list(exit_blocks), dtype=np.int64)
    lens = np.asarray(list(seq_lens), dtype=np.int64)
    cache: dict[int, OpsBreakdown] = {}
    full = early = 0.0
    for b, t in zip(blocks, lens, strict=True):
        ops = cache.setdefault(int(t), ops_per_sample(config, int(t)))
        full += ops.full.combined
        early += ops.up_to(int(b)).combined
    hist = np.bincount(blocks, minlength=config.n_blocks + 1)[1:].tolist()
    saved = 1.0 - early / full if full else 0.0
    return ExitCost(full, early, saved, hist, float(blocks.mean()) if len(blocks) else float("nan"))
