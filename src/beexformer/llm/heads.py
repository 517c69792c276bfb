"""Self-supervised exit heads (arXiv 2407.21082): norm + linear at chosen layers, initialised from the
model's own final norm and LM head, trained with the backbone frozen.

A head may cover the full vocabulary or a *pruned* one: the N tokens the model predicts most often, plus one
extra "other" class for all remaining tokens. The pruned head is what makes a gate cheap enough to pay: on
SmolLM2-135M a full 49,152-row head costs as much as 6 decoder layers, a 2,048-row one about a third of a
layer. The "other" class is the exact fallback: when it wins, or the head is unsure, the token goes on to the
full model, which can produce any token.

Heads are saved as one small safetensors file with their layers, vocabulary and model name as metadata, and
with the confidence probes (`probes.py`) trained for them, if any.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from beexformer.errors import CheckpointError, ConfigError
from beexformer.llm.adapters import ModelAdapter

FORMAT = "beex-llm-exit-heads/1"


def default_head_layers(num_layers: int, count: int = 4) -> list[int]:
    """About 1/5, 2/5, 3/5, 4/5 of the depth (for count=4): round(k * L / (count + 1))."""
    layers = sorted({max(1, min(num_layers - 1, round(k * num_layers / (count + 1)))) for k in range(1, count + 1)})
    return layers


class ExitHead(nn.Module):
    """Norm + linear from the hidden state after `layer` layers to the (pruned) vocabulary."""

    def __init__(self, adapter: ModelAdapter, layer: int, token_ids: torch.Tensor | None) -> None:
        super().__init__()
        self.layer = layer
        self.norm = copy.deepcopy(adapter.final_norm)
        full = adapter.lm_head.weight.detach()
        if token_ids is None:
            weight = full.clone()
        else:
            # The "other" row starts at zero; training moves it to the mass outside the pruned vocabulary.
            weight = torch.cat([full[token_ids], torch.zeros(1, full.shape[1], dtype=full.dtype)])
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=full.dtype))
        ids = token_ids if token_ids is not None else torch.empty(0, dtype=torch.long)
        self.register_buffer("token_ids", ids.clone().long(), persistent=True)

    @property
    def pruned(self) -> bool:
        return self.token_ids.numel() > 0

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [..., V'] over the head's classes (pruned vocabulary + "other", or the full vocabulary)."""
        x = self.norm(hidden)
        if self.weight.dtype != x.dtype:
            # A half-precision head (`ExitHeads.with_weight_dtype`): a gate's cost is reading its weights
            # from memory, since the decoder layers run between two gates evict them from the caches.
            return nn.functional.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)
        return nn.functional.linear(x, self.weight, self.bias)

    def class_to_token(self, classes: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids of head classes; -1 for the "other" class."""
        if not self.pruned:
            return classes
        padded = torch.cat([self.token_ids, torch.tensor([-1])])
        return padded[classes]


@dataclass(frozen=True)
class HeadsInfo:
    """Metadata stored with the heads."""

    layers: list[int]
    model: str
    num_layers: int
    vocab_size: int
    probe_width: int | None = None  # None: no probes; 0: linear probes; else the probes' hidden width


class ExitHeads(nn.Module):
    """The exit heads of one model, keyed by layer."""

    def __init__(self, heads: list[ExitHead], model_name: str, num_layers: int, vocab_size: int) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({str(h.layer): h for h in heads})
        self.probes = nn.ModuleDict()
        self.info = HeadsInfo(sorted(h.layer for h in heads), model_name, num_layers, vocab_size)

    @classmethod
    def create(
        cls,
        adapter: ModelAdapter,
        layers: list[int],
        token_ids: torch.Tensor | None,
        model_name: str,
    ) -> ExitHeads:
        for layer in layers:
            if not 1 <= layer < adapter.num_layers:
                raise ConfigError(f"head layer {layer} must be in 1..{adapter.num_layers - 1}")
        heads = [ExitHead(adapter, layer, token_ids) for layer in sorted(set(layers))]
        return cls(heads, model_name, adapter.num_layers, adapter.vocab_size)

    @property
    def layers(self) -> list[int]:
        return self.info.layers

    def head(self, layer: int) -> ExitHead:
        return self.heads[str(layer)]  # type: ignore[return-value]

    @property
    def has_probes(self) -> bool:
        return len(self.probes) > 0

    def probe(self, layer: int) -> nn.Module:
        """The confidence probe of head `layer` (ConfigError if these heads have none)."""
        if str(layer) not in self.probes:
            raise ConfigError(f"no confidence probe for layer {layer}: retrain the heads with beex llm train-heads")
        return self.probes[str(layer)]

    def attach_probes(self, probes: dict[int, nn.Module], width: int) -> None:
        """Store one trained probe per head layer with the heads (saved in the same file)."""
        if sorted(probes) != self.layers:
            raise ConfigError(f"probes for layers {sorted(probes)}, heads at {self.layers}")
        self.probes = nn.ModuleDict({str(k): v for k, v in probes.items()})
        self.info = HeadsInfo(**{**self.info.__dict__, "probe_width": width})

    def with_weight_dtype(self, dtype: torch.dtype) -> ExitHeads:
        """A copy whose linear weights and biases are stored in `dtype` (the norms stay as they are):
        float16 halves the bytes a gate reads per call, at a rounding of its logits. Calibrate with the same
        copy that gates (`Calibration.gate_dtype` records which)."""
        copied = copy.deepcopy(self)
        for head in copied.heads.values():
            head.weight.data = head.weight.data.to(dtype)
            head.bias.data = head.bias.data.to(dtype)
        return copied

    def save(self, path: str | Path) -> None:
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": FORMAT, "info": json.dumps(self.info.__dict__)}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | Path, adapter: ModelAdapter) -> ExitHeads:
        """Load heads saved by `save` for the model behind `adapter`; CheckpointError if they do not fit."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"heads file not found: {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except Exception as err:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"cannot read heads file {path}: {err}") from err
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a beex exit-heads file")
        info = HeadsInfo(**json.loads(meta["info"]))
        if info.num_layers != adapter.num_layers or info.vocab_size != adapter.vocab_size:
            raise CheckpointError(
                f"{path} was trained for a model with {info.num_layers} layers and vocabulary "
                f"{info.vocab_size}, "
                f"this one has {adapter.num_layers} and {adapter.vocab_size}"
            )
        heads = []
        for layer in info.layers:
            ids = tensors[f"heads.{layer}.token_ids"]
            heads.append(ExitHead(adapter, layer, ids if ids.numel() else None))
        obj = cls(heads, info.model, info.num_layers, info.vocab_size)
        if info.probe_width is not None:
            from beexformer.llm.probes import ExitProbe

            width = info.probe_width
            obj.attach_probes({k: ExitProbe(adapter.hidden_size, width) for k in info.layers}, width)
        obj.load_state_dict(tensors)
        return obj.to(adapter.dtype)
