"""Uniform access to the parts of a Hugging Face causal LM that early exit needs.

Three families are supported: LLaMA-style (`model.model.layers`, RMSNorm, rotary: LLaMA, Mistral, Qwen2/3,
Phi-3, Gemma 2 and Gemma 3), GPT-2 (`transformer.h`, learned positions) and GPT-NeoX / Pythia
(`gpt_neox.layers`, partial rotary). The adapter calls the model's own decoder-layer modules one at a time, so
the weights and the layer code stay the model's; only the loop over layers is ours.

What differs between the LLaMA-style models is handled here, once: Gemma's scaled embeddings and extra norms
live inside its own modules; its per-layer attention types (sliding window or global) give each layer a
window that the masks respect (Mistral and Phi-3 may slide on every layer); Gemma 3 has one rotary table per
layer type; Gemma 2 soft-caps its final logits. Any other `model_type` is refused when the adapter is built,
with a one-line error naming it, rather than failing (or silently differing) inside decoding.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from beexformer.errors import ConfigError
from beexformer.llm import greedy_head

# model_type values whose decoder layers the adapter drives, each checked against Hugging Face greedy decoding
# on a tiny random model in tests/llm.
LLAMA_STYLE = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text")
SUPPORTED = (*LLAMA_STYLE, "gpt2", "gpt_neox")

# Rotary embeddings of a set of positions: the (cos, sin) pair, or one pair per attention type (Gemma 3).
Rotary = Any


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
    # Per layer: its attention type ("full_attention" / "sliding_attention") and sliding window (None: global).
    layer_types: tuple[str, ...] = ()
    windows: tuple[int | None, ...] = ()
    final_softcap: float | None = None  # Gemma 2: logits = cap * tanh(logits / cap)
    rotary_per_type: bool = False  # Gemma 3: one rotary table per attention type

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

    def rotary_embeddings(self, hidden: torch.Tensor, positions: torch.Tensor) -> Rotary:
        """The (cos, sin) pair the layers expect for these positions (a dict of pairs by attention type when the
        model has one rotary table per type, as Gemma 3 does), or None without rotary."""
        if self.rotary is None:
            return None
        if self.rotary_per_type:
            return {t: self.rotary(hidden, positions, t) for t in sorted(set(self.layer_types))}
        return self.rotary(hidden, positions)

    def layer_rotary(self, index: int, rotary: Rotary) -> Any:
        """The (cos, sin) pair of layer `index` out of `rotary_embeddings`' result."""
        return rotary[self.layer_types[index]] if isinstance(rotary, dict) else rotary

    def window(self, index: int) -> int | None:
        """The sliding window of layer `index`: a query at p sees keys at p - window < k <= p; None: all."""
        return self.windows[index] if self.windows else None

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
        rotary = self.layer_rotary(index, rotary)
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
                cache=cache,
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
        rotary = self.layer_rotary(index, rotary)
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
        if hasattr(attn, "qkv_proj"):  # Phi-3: one fused projection, [q | k | v]
            q_size = self.model.config.num_attention_heads * attn.head_dim
            kv_size = attn.num_key_value_heads * attn.head_dim
            qkv = attn.qkv_proj(x)
            k, v = qkv[..., q_size : q_size + kv_size].view(shape), qkv[..., q_size + kv_size :].view(shape)
        else:
            k, v = attn.k_proj(x).view(shape), attn.v_proj(x).view(shape)
        if getattr(attn, "k_norm", None) is not None:  # Qwen3 / Gemma 3 per-head key norm
            k = attn.k_norm(k)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        _, k = _rotary_fn(attn)(k, k, *rotary)
        return k, v

    def logits(self, hidden: torch.Tensor, use_norm: bool = True) -> torch.Tensor:
        """The model's own head on a hidden state: lm_head(final_norm(h)) (or lm_head(h) without the norm),
        soft-capped as the model's own forward does (Gemma 2)."""
        logits = self.lm_head(self.final_norm(hidden) if use_norm else hidden)
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def greedy_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """logits(hidden).argmax(-1) for hidden [..., d]: the streaming kernel of `greedy_head` when the head
        allows it (`greedy_head.streams`), else through the logits. Decoding's one way to pick a token
        with the full head, so plain, early-exit and self-speculative decoding all use the same kernel."""
        if greedy_head.streams(self.lm_head, self.final_softcap):
            return greedy_head.greedy_argmax(self.lm_head.weight, self.final_norm(hidden))
        return self.logits(hidden).argmax(dim=-1)


def _rotary_fn(attn: nn.Module) -> Any:
    """The apply_rotary_pos_emb function of the module that defines this attention class."""
    return sys.modules[type(attn).__module__].apply_rotary_pos_emb


def _windows(config: Any, num_layers: int) -> tuple[tuple[str, ...], tuple[int | None, ...]]:
    """Attention type and sliding window of every layer, as the model's own mask functions decide them."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is None:  # Mistral, Phi-3: one window (or none) for every layer
        return ("full_attention",) * num_layers, (window,) * num_layers
    types = tuple(types)
    unknown = set(types) - {"full_attention", "sliding_attention"}
    if unknown:
        raise ConfigError(f"unsupported attention layer types {sorted(unknown)} in {type(config).__name__}")
    return types, tuple(window if t == "sliding_attention" else None for t in types)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """Build the adapter for a supported causal LM (`SUPPORTED` model types); ConfigError naming the
    architecture for anything else."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED:
        raise ConfigError(
            f"unsupported architecture {type(model).__name__} (model_type {model_type!r}): beex llm drives "
            f"{', '.join(SUPPORTED)}"
        )
    if getattr(config, "use_bidirectional_attention", False):
        raise ConfigError(f"{type(model).__name__} attends bidirectionally: early exit needs a causal LM")
    if model_type in LLAMA_STYLE:
        inner = model.model
        types, windows = _windows(config, len(inner.layers))
        rotary = getattr(inner, "rotary_emb", None)
        return ModelAdapter(
            model=model,
            kind="llama",
            layers=inner.layers,
            final_norm=inner.norm,
            lm_head=model.lm_head,
            token_embedding=inner.embed_tokens,
            position_embedding=None,
            rotary=rotary,
            layer_types=types,
            windows=windows,
            final_softcap=getattr(config, "final_logit_softcapping", None),
            rotary_per_type=rotary is not None and "layer_type" in inspect.signature(rotary.forward).parameters,
        )
    if model_type == "gpt2":
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
