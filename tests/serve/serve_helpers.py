"""Fixtures and helpers of the server tests: tiny packed models exported from small random BEExformers (as
tests/engine does) and an in-process app runner. A module of its own rather than a conftest.py: test
directories share the module name `conftest`, and another directory's `from conftest import ...` must not
find this one. Test modules import the fixtures they use from here."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest

TEXTS = ["a fine film", "a dull , tedious film", "the best movie of the year", "not good at all"]


def _export(directory: Path, name: str, task_info: dict, seed: int, **overrides) -> Path:
    import torch

    from beexformer.config import BEExformerConfig
    from beexformer.data.tokenizer import TextEncoder
    from beexformer.engine.export import export_model
    from beexformer.model import BEExformer

    encoder = TextEncoder.train_wordpiece(TEXTS * 20, vocab_size=120, min_frequency=1)
    tok_dir = encoder.save(directory / f"{name}-tokenizer")
    torch.manual_seed(seed)
    base = dict(d_model=64, d_ff=96, n_heads=4, n_blocks=4, vocab_size=encoder.vocab_size, max_len=48)
    base.update(exit_hidden=16, act_bits=1, **overrides)
    model = BEExformer(BEExformerConfig(**base))
    with torch.no_grad():  # move weights away from their init so exits differ between inputs
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    task_info = {"max_len": 48, "exit_rule": "fractional_entropy", "exit_threshold": 0.05, **task_info}
    return export_model(model.eval(), tok_dir, directory / f"{name}.beex", task_info=task_info)


@pytest.fixture(scope="session")
def packed_models(tmp_path_factory) -> dict[str, Path]:
    """name -> packed file: sst2 (single texts, 2 labels), rte (pairs), stsb (regression), cola (patience rule)."""
    d = tmp_path_factory.mktemp("serve-models")
    return {
        "sst2": _export(d, "sst2", {"task": "sst2", "label_list": ["negative", "positive"]}, seed=1),
        "rte": _export(d, "rte", {"task": "rte", "label_list": ["entailment", "not_entailment"]}, seed=2),
        "stsb": _export(
            d,
            "stsb",
            {"task": "stsb", "label_list": [], "exit_rule": "regression_patience", "exit_threshold": 0.1},
            seed=3,
            n_classes=1,
        ),
        "cola": _export(
            d,
            "cola",
            {"task": "cola", "label_list": ["0", "1"], "exit_rule": "patience", "exit_threshold": 2},
            seed=4,
        ),
    }


@pytest.fixture(scope="session")
def served(packed_models):
    """ServedModel per packed file (loaded once per session)."""
    from beexformer.serve.model import ServedModel

    return {name: ServedModel(name, path) for name, path in packed_models.items()}


@contextlib.asynccontextmanager
async def running_app(app):
    """The app with its lifespan entered, and a client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def run(coro):
    return asyncio.run(coro)
