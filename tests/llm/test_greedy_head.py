"""The streaming greedy head: the same tokens as logits.argmax, ties to the lowest id, rows independent."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from beexformer.llm import greedy_head
from beexformer.llm.greedy_head import BLOCK, greedy_argmax, streams


def _weight(vocab: int, dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(vocab, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rows", [1, 2, 5, 9])
def test_tokens_equal_torch_argmax_across_blocks(rows: int) -> None:
    weight = _weight(3 * BLOCK + 123, 48)
    hidden = torch.randn(rows, 48, generator=torch.Generator().manual_seed(rows))
    expected = (hidden @ weight.T).argmax(-1)
    assert torch.equal(greedy_argmax(weight, hidden), expected)


def test_shape_follows_hidden() -> None:
    weight = _weight(500, 16)
    assert greedy_argmax(weight, torch.randn(16)).shape == ()
    assert greedy_argmax(weight, torch.randn(1, 3, 16)).shape == (1, 3)


def test_ties_go_to_the_lowest_id_within_and_across_blocks() -> None:
    weight = _weight(2 * BLOCK + 10, 32)
    hidden = torch.randn(32, generator=torch.Generator().manual_seed(5))
    best = weight[7] * 0 + hidden * 10  # a row scoring far above every random row
    for token in (BLOCK + 3, 7, 2 * BLOCK + 1, BLOCK + 9):  # the same top score in three blocks
        weight[token] = best
    assert int(greedy_argmax(weight, hidden)) == 7
    assert int((hidden @ weight.T).argmax()) == 7


def test_a_rows_token_does_not_depend_on_the_other_rows() -> None:
    """A verify pass (several rows) must pick, for each row, what a one-row greedy step picks."""
    weight = _weight(BLOCK + 77, 64)
    hidden = torch.randn(8, 64, generator=torch.Generator().manual_seed(3))
    together = greedy_argmax(weight, hidden)
    alone = torch.stack([greedy_argmax(weight, row) for row in hidden])
    assert torch.equal(together, alone)


def test_thread_count_does_not_change_tokens() -> None:
    weight = _weight(4 * BLOCK, 40)
    hidden = torch.randn(4, 40, generator=torch.Generator().manual_seed(9))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = greedy_argmax(weight, hidden)
        torch.set_num_threads(2)
        two = greedy_argmax(weight, hidden)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_streams_only_plain_float_heads() -> None:
    assert streams(nn.Linear(16, 100, bias=False), None)
    assert streams(nn.Linear(16, 100, bias=False).double(), None)  # the tests' tiny models
    assert not streams(nn.Linear(16, 100, bias=False), 30.0)  # Gemma 2's soft-cap
    assert not streams(nn.Linear(16, 100, bias=True), None)
    assert not streams(nn.Linear(16, 100, bias=False).to(torch.bfloat16), None)


def test_adapter_uses_the_kernel_where_it_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    from beexformer.llm.adapters import adapter_for
    from conftest import tiny_model

    adapter = adapter_for(tiny_model("llama"))
    hidden = torch.randn(3, adapter.hidden_size, dtype=adapter.dtype)
    calls: list[int] = []
    real = greedy_head.greedy_argmax
    monkeypatch.setattr(greedy_head, "greedy_argmax", lambda w, h: calls.append(1) or real(w, h))
    assert torch.equal(adapter.greedy_tokens(hidden), adapter.logits(hidden).argmax(-1))
    assert calls == [1]
    capped = adapter_for(tiny_model("gemma2"))  # soft-capped logits: through the logits, never the kernel
    assert torch.equal(capped.greedy_tokens(hidden), capped.logits(hidden).argmax(-1))
    assert calls == [1]
