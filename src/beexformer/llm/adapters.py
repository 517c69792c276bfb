"""Uniform access to the parts of a Hugging Face causal LM that early exit needs.

Three families are supported: LLaMA-style (`model.model.layers`, RMSNorm, rotary; also Mistral, Qwen2 and
other models laid out the same way), GPT-2 (`transformer.h`, learned positions) and GPT-NeoX / Pythia
(`gpt_neox.layers`, partial rotary). The adapter calls the model's own decoder-layer modules one at a time, so
the weights and the layer code stay the model's; only the loop over layers is ours.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from beexformer.errors import ConfigError


@dataclass(frozen=True)
class ModelAdapter:
    """Architecture access: embeddings, decoder layers, final norm and LM head of one causal LM."""

    model: nn.Module
    kind: str  # "llama", "gpt2" or "gpt_neox"
    layers: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module
    token_embedding: nn.Module
    position_embedding: nn.Module | None  # GPT-2's learned positions
    rotary: nn.Module | None  # LLaMA / NeoX rotary embedding module

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head.weight.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, T, d] for token ids [B, T] at absolute positions [B, T]."""
        hidden = self.token_embedding(input_ids)
        if self.position_embedding is not None:
            hidden = hidden + self.position_embedding(positions)
        return hidden

    def rotary_embeddings(self, hidden: torch.Tensor, positions: torch.Tensor) -> Any:
        """The (cos, sin) pair the layers expect for these positions, or None without rotary."""
        if self.rotary is None:
            return None
        return self.rotary(hidden, positions)

    def attention_module(self, index: int) -> nn.Module:
        """The self-attention sub-module of layer `index` (its output is the attention sub-layer's delta)."""
        layer = self.layers[index]
        return layer.attn if self.kind == "gpt2" else getattr(layer, "self_attn", getattr(layer, "attention", None))

    def run_layer(
        self,
        index: int,
        hidden: torch.Tensor,
        positions: torch.Tensor,
        rotary: Any,
        mask: torch.Tensor | None,
        cache: Any,
    ) -> torch.Tensor:
        """One decoder layer on `hidden` [B, T, d]; `cache` (if given) receives this layer's new K/V."""
        layer = self.layers[index]
        if self.kind == "gpt2":
            out = layer(hidden, past_key_values=cache, attention_mask=mask, use_cache=cache is not None)
        elif self.kind == "gpt_neox":
            out = layer(
                hidden,
                attention_mask=mask,
                position_ids=positions,
                layer_past=cache,
                use_cache=cache is not None,
                position_embeddings=rotary,
            )
        else:
            out = layer(
                hidden,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=cache is not None,
                position_embeddings=rotary,
            )
        # Older transformers versions return a tuple (hidden, ...); 5.x returns the tensor.
        return out[0] if isinstance(out, tuple) else out

    def project_kv(self, index: int, hidden: torch.Tensor, rotary: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """K/V [B, kv_heads, T, head_dim] that layer `index` would cache if `hidden` [B, T, d] were its input.

        Used by the "copy" KV fill: a token that exits early gets K/V in the layers it skipped computed from
        its exit hidden state (CALM's state propagation) at the price of two small projections per layer.
        """
        layer = self.layers[index]
        bsz, seq, _ = hidden.shape
        if self.kind == "gpt2":
            attn = layer.attn
            _, k, v = attn.c_attn(layer.ln_1(hidden)).split(attn.split_size, dim=2)
            shape = (bsz, seq, -1, attn.head_dim)
            return k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)
        if self.kind == "gpt_neox":
            attn = layer.attention
            qkv = attn.query_key_value(layer.input_layernorm(hidden)).view(bsz, seq, -1, 3 * attn.head_size)
            q, k, v = qkv.transpose(1, 2).chunk(3, dim=-1)
            _, k = _rotary_fn(attn)(q, k, *rotary)
            return k, v
        attn = layer.self_attn
        x = layer.input_layernorm(hidden)
        shape = (bsz, seq, -1, attn.head_dim)
        k = attn.k_proj(x).view(shape)
        if getattr(attn, "k_norm", None) is not None:  # Qwen3-style per-head key norm
            k = attn.k_norm(k)
        k = k.transpose(1, 2)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        _, k = _rotary_fn(attn)(k, k, *rotary)
        return k, v

    def logits(self, hidden: torch.Tensor, use_norm: bool = True) -> torch.Tensor:
        """The model's own head on a hidden state: lm_head(final_norm(h)) (or lm_head(h) without the norm)."""
        return self.lm_head(self.final_norm(hidden) if use_norm else hidden)


def _rotary_fn(attn: nn.Module) -> Any:
    """The apply_rotary_pos_emb function of the module that defines this attention class."""
    return sys.modules[type(attn).__module__].apply_rotary_pos_emb


def adapter_for(model: nn.Module) -> ModelAdapter:
    """Build the adapter for a LLaMA-style, GPT-2 or GPT-NeoX causal LM; ConfigError for anything else."""
    if hasattr(model, "model") and hasattr(model.model, "layers") and hasattr(model.model, "norm"):
        inner = model.model
        return ModelAdapter(
            model=model,
            kind="llama",
            layers=inner.layers,
            final_norm=inner.norm,
            lm_head=model.lm_head,
            token_embedding=inner.embed_tokens,
            position_embedding=None,
            rotary=getattr(inner, "rotary_emb", None),
        )
    if hasattr(model, "transformer") and hasattr(model.transformer, "h"):
        inner = model.transformer
        return ModelAdapter(
            model=model,
            kind="gpt2",
            layers=inner.h,
            final_norm=inner.ln_f,
            lm_head=model.lm_head,
            token_embedding=inner.wte,
            position_embedding=inner.wpe,
            rotary=None,
        )
    if hasattr(model, "gpt_neox"):
        inner = model.gpt_neox
        return ModelAdapter(
            model=model,
            kind="gpt_neox",
            layers=inner.layers,
            final_norm=inner.final_layer_norm,
            lm_head=model.get_output_embeddings(),
            token_embedding=inner.embed_in,
            position_embedding=None,
            rotary=inner.rotary_emb,
        )
    raise ConfigError(
        f"unsupported architecture {type(model).__name__}: expected a LLaMA-style, GPT-2 or GPT-NeoX causal LM"
    )
