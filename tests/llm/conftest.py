"""Tiny randomly initialised causal LMs of every architecture the adapters drive (no download), in float64 so
that grouping rows differently (one token vs. several in one call) cannot flip an argmax through rounding.

The sliding-window architectures get a window of 4 tokens, shorter than the prompts plus their continuations,
so a mask that ignored the window would change the output."""

from __future__ import annotations

import pytest
import torch

ARCHS = ["llama", "gpt2", "gpt_neox", "qwen2", "qwen3", "mistral", "phi3", "gemma2", "gemma3"]
VOCAB = 97
WINDOW = 4
# Gemma normalises each sub-layer's output before adding it to the residual stream ((1 + w) RMSNorm).
GEMMA = ("gemma2", "gemma3")


def _llama_style_config(kind: str, layers: int):  # noqa: ANN202
    import transformers as tf

    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    # Mixed layer types where the architecture has them: sliding on some layers, global on the others.
    mixed = ["sliding_attention" if i % 3 != 2 else "full_attention" for i in range(layers)]
    if kind == "llama":
        return tf.LlamaConfig(**common), tf.LlamaForCausalLM
    if kind == "qwen2":
        cfg = tf.Qwen2Config(**common, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2)
        return cfg, tf.Qwen2ForCausalLM
    if kind == "qwen3":  # Qwen2's layout plus per-head query/key norms
        cfg = tf.Qwen3Config(**common, head_dim=8, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2)
        return cfg, tf.Qwen3ForCausalLM
    if kind == "mistral":
        return tf.MistralConfig(**common, sliding_window=WINDOW), tf.MistralForCausalLM
    if kind == "phi3":
        return tf.Phi3Config(
            **common, sliding_window=WINDOW, pad_token_id=0, bos_token_id=1, eos_token_id=1
        ), tf.Phi3ForCausalLM
    if kind == "gemma2":
        cfg = tf.Gemma2Config(**common, head_dim=8, sliding_window=WINDOW, layer_types=mixed, query_pre_attn_scalar=8)
        return cfg, tf.Gemma2ForCausalLM
    cfg = tf.Gemma3TextConfig(**common, head_dim=8, sliding_window=WINDOW, layer_types=mixed, query_pre_attn_scalar=8)
    return cfg, tf.Gemma3ForCausalLM


def tiny_model(kind: str, layers: int = 6, seed: int = 0) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    if kind not in ("gpt2", "gpt_neox"):
        cfg, cls = _llama_style_config(kind, layers)
        model = cls(cfg)
    elif kind == "gpt2":
        cfg = GPT2Config(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=layers,
            n_head=4,
            n_positions=256,
            bos_token_id=0,
            eos_token_id=0,
        )
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = GPTNeoXConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=256,
            rotary_pct=0.5,
        )
        model = GPTNeoXForCausalLM(cfg)
    # Random init gives near-uniform outputs; larger weights make argmaxes (and exits) more decisive.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    # No end-of-sequence token: the greedy references must run to their full length without suppression.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.double().eval()


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> None:
    # Tiny models gain nothing from threads, and on a busy machine OpenMP spinning makes them 20x slower.
    torch.set_num_threads(1)


@pytest.fixture(params=ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def model(arch: str) -> torch.nn.Module:
    return tiny_model(arch)
