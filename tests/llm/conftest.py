"""Tiny randomly initialised LLaMA, GPT-2 and GPT-NeoX models (no download), in float64 so that grouping
rows differently (one token vs. several in one call) cannot flip an argmax through rounding."""

from __future__ import annotations

import pytest
import torch

ARCHS = ["llama", "gpt2", "gpt_neox"]
VOCAB = 97


def tiny_model(kind: str, layers: int = 6, seed: int = 0) -> torch.nn.Module:
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(seed)
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(cfg)
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
