"""BEExformerConfig: every architectural and binarization choice, with the default and why.

Where the paper is silent the default is our choice (docs/design.md tags it [inferred] or [open]); each such choice
is a field here so it can be changed and reported.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beexformer.errors import ConfigError

# min over x of x * Phi(x) is -0.16997 (at x = -0.7518): `act_gelu_floor`'s floor, just below it, so that no
# GELU output is clipped. Here, not in `quantizers`, so that the packed runtime can read it without torch.
GELU_MIN = -0.17


@dataclass(frozen=True)
class InputCoding:
    """How a block linear's input is coded, from what produced it (`BEExformerConfig.input_coding`)."""

    non_negative: bool  # a sigmoid or GELU output: the learned quantizers code it with the unsigned set
    centre: float  # what the mean-sign subtracts before taking the sign (0.5 for a sigmoid output)
    floor: float  # where the unsigned levels start: GELU's minimum for lin2 with act_gelu_floor, else 0


@dataclass
class BEExformerConfig:
    # --- sizes ---
    vocab_size: int = 8000  # WordPiece trained on the task's training text
    # Longest input the positions cover. Sinusoidal: the truncation length (nothing stored); learned positions
    # from a BERT checkpoint (`--init`): its max_position_embeddings (512), the table loaded as it is, while
    # inputs are still truncated to the run's --max-len (task.json).
    max_len: int = 128
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 512  # hidden width of the SLFN branches
    n_blocks: int = 6  # C: one exit after each
    n_classes: int = 2  # 1 means regression (STS-B)
    n_segments: int = 2  # segment (token type) embeddings for sentence pairs; 0 disables them
    exit_hidden: int = 32  # width of the exit MLP; small, because the exits stay full precision
    # --- architecture choices ---
    position: str = "sinusoidal"  # "sinusoidal" (no parameters) or "learned"
    combine: str = "add"  # token + position: "add" or "concat" (the paper's wording)
    norm: str = "post"  # "post" (the predecessor's form) or "pre"
    # "slfn" (the paper), "ffn" (plain feed-forward: BERT's, and the ablation) or "ffn_slfn": BERT's FFN plus an
    # SLFN branch behind a per-channel gate initialised to 0, so that a pretrained start computes exactly the
    # checkpoint's function at step 0 and the SLFN only joins in as far as training opens its gate.
    ffn: str = "slfn"
    # Activation of the plain FFN: "gelu" is the exact erf form, BERT's (not the tanh approximation); the one
    # choice so far, a field so that a checkpoint asking for another one is refused instead of run wrongly.
    ffn_activation: str = "gelu"
    share_weights: bool = False  # one block reused C times, as in the predecessor
    dropout: float = 0.1
    layer_norm_eps: float = 1e-5  # BERT checkpoints: 1e-12
    # What the exit heads read: "mean" (masked mean over tokens; all-MiniLM-L6-v2 was trained for mean
    # pooling) or "cls" (the first token's vector, as BERT's pooler).
    pooling: str = "mean"
    # The tokenizer the model was built with (informational for eval/export, which load tokenizer.json):
    # "trained" = WordPiece learned on the task's training text, "vocab" = a checkpoint's vocab.txt, read as
    # BERT does; lowercase = BERT-uncased normalisation (lower-case, strip accents).
    tokenizer_kind: str = "trained"
    lowercase: bool = True
    # --- binarization ---
    weight_bits: int = 1  # 1 or 32, for every linear layer inside the blocks
    # Inputs of every linear layer inside the blocks: 32 (W1A32, the paper's setting), 1 (W1A1, needed for
    # XNOR-popcount speed), or 2 / 4 (a learned-step uniform quantizer, LSQ; `beexformer.quantizers`).
    act_bits: int = 32
    # At act_bits=1: "mean_sign" (c + beta * sign(x - c), beta = mean|x - c| per token) or "elastic" (BiT's
    # elastic sign: a learned step and threshold per layer, {0, 1} * s after a sigmoid / GELU).
    act_binarizer: str = "mean_sign"
    # Input channels of every quantized linear kept at full precision (the K largest on the first batch;
    # `beexformer.quantizers`): a pretrained encoder's few outlier channels otherwise take the activation
    # step's range. Learned quantizers only (2 / 4 bits, or the elastic sign).
    act_outliers: int = 0
    # Levels of the learned quantizers for a GELU output (the FFN's down-projection input) from GELU's minimum
    # (-0.17) instead of 0: from 0 they clip every inactive unit's small negative value (`beexformer.quantizers`).
    act_gelu_floor: bool = False
    # Token table: 1 (signs with a per-row scale; it dominates the size otherwise), 8 (int8 codes with a per-row
    # scale: a quarter of float32, and close to it) or 32.
    embedding_bits: int = 1
    exit_bits: int = 32  # the exit MLP's first layer; the paper keeps exits full precision
    weight_quantizer: str = "approx_sign"  # "approx_sign" (Bi-Real Net polynomial) or "ste"
    act_quantizer: str = "approx_sign"
    weight_scale: str = "row"  # alpha = mean|W| per output "row" or per "tensor"
    # --- training objective ---
    loss_weighting: str = "uniform"  # soft routing over exits: "uniform", "depth" or "entropy"
    entropy_temperature: float = 1.0  # T of the entropy-softmax weighting

    def input_coding(self, linear: str) -> InputCoding:
        """How the block linear `linear` (a name ending in q, k, v, o, s1, s2, f1, f2, lin1 or lin2) codes its
        input. The one place that says so, for the PyTorch layers (`layers.slfn`) and the packed runtime alike:
        SLFN's s2 reads a sigmoid, the FFN's lin2 a GELU; every other linear a signed value centred on 0."""
        sigmoid, gelu = linear.endswith("s2"), linear.endswith("lin2")
        floor = GELU_MIN if self.act_gelu_floor and gelu else 0.0
        return InputCoding(non_negative=sigmoid or gelu, centre=0.5 if sigmoid else 0.0, floor=floor)

    @property
    def is_regression(self) -> bool:
        return self.n_classes == 1

    def validate(self) -> BEExformerConfig:
        """Raise ConfigError naming the first field that is out of range."""
        choices = {
            "position": ("sinusoidal", "learned"),
            "combine": ("add", "concat"),
            "norm": ("post", "pre"),
            "ffn": ("slfn", "ffn", "ffn_slfn"),
            "ffn_activation": ("gelu",),
            "pooling": ("mean", "cls"),
            "tokenizer_kind": ("trained", "vocab"),
            "weight_quantizer": ("approx_sign", "ste", "identity"),
            "act_quantizer": ("approx_sign", "ste", "identity"),
            "act_binarizer": ("mean_sign", "elastic"),
            "weight_scale": ("row", "tensor"),
            "loss_weighting": ("uniform", "depth", "entropy"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        for name in ("weight_bits", "exit_bits"):
            if getattr(self, name) not in (1, 32):
                raise ConfigError(f"{name}={getattr(self, name)}: must be 1 or 32")
        if self.embedding_bits not in (1, 8, 32):
            raise ConfigError(f"embedding_bits={self.embedding_bits}: must be 1, 8 or 32")
        if self.act_bits not in (1, 2, 4, 32):
            raise ConfigError(f"act_bits={self.act_bits}: must be 1, 2, 4 or 32")
        if self.act_outliers < 0 or self.act_outliers >= min(self.d_model, self.d_ff):
            raise ConfigError(f"act_outliers={self.act_outliers}: must be in [0, {min(self.d_model, self.d_ff)})")
        learned = self.act_bits in (2, 4) or (self.act_bits == 1 and self.act_binarizer == "elastic")
        if self.act_gelu_floor and not learned:
            raise ConfigError("act_gelu_floor moves the levels of a learned quantizer: act_bits 2 or 4, or elastic")
        if self.act_outliers and self.act_bits == 1 and self.act_binarizer == "mean_sign":
            raise ConfigError("act_outliers needs a learned activation quantizer: add act_binarizer=elastic at 1 bit")
        for name in (
            "vocab_size",
            "max_len",
            "d_model",
            "n_heads",
            "d_ff",
            "n_blocks",
            "n_classes",
            "exit_hidden",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be a positive integer")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.combine == "concat" and self.d_model % 8:
            raise ConfigError("combine='concat' needs d_model divisible by 8")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps={self.layer_norm_eps}: must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout}: must be in [0, 1)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BEExformerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**values).validate()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BEExformerConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None

    def float_twin(self) -> BEExformerConfig:
        """The same architecture with every binarization turned off."""
        return dataclasses.replace(self, weight_bits=32, act_bits=32, embedding_bits=32, exit_bits=32)
