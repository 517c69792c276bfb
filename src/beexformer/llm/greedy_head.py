"""Greedy tokens through a large LM head: the argmax of W h for a few rows h, without the logits.

Why: decoding asks the full-vocabulary head for one row per step (plain greedy, early exit) or a few rows (a
self-speculative verify pass). torch's `linear` hands one row to a matrix-vector kernel and a few rows to a
matrix-matrix kernel that repacks the weight; on Gemma-3-270M's head (262,144 x 640, float32, 671 MB) one
thread measured 69.4 ms for one row and 146.7 ms for five (`full_head_ms`, `full_head_ms_5rows` in
benchmarks/results/llm_decoding_gemma3-270m_3runs.json). This kernel streams the weight once for all rows
(each weight row stays in L1 while it meets every hidden row) and keeps a running argmax per block of the
vocabulary instead of writing the logits: 22.9 ms for one row and 24.0 ms for five in the same benchmark
(`llm_decoding_gemma3-270m_streamhead.json`; it measures the head on each run).

Each score is one dot product computed by the same code whatever the number of rows or threads, so the
token chosen for a row never depends on how many rows share the call: a verify pass confirms a draft with
exactly the scores plain greedy decoding would have computed. Ties go to the lowest token id, as torch's
argmax does. The running max is kept in a fixed order per block and blocks are compared in order, so the
result does not depend on the thread count either.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import nn

# Vocabulary rows per block: one block per task of the parallel loop (64 blocks for Gemma's 262,144 tokens).
BLOCK = 4096
_NUMPY_TYPES = {torch.float32: np.float32, torch.float64: np.float64}


@njit(parallel=True, fastmath={"reassoc", "contract"}, nogil=True, cache=True)
def _block_argmax(weight, rows, block, zero, best_val, best_idx):  # noqa: ANN001, ANN202 (numba kernel)
    """Per vocabulary block b and row j: the largest score weight[n] . rows[j] in the block and its first n
    (`zero` sets the accumulator's type: float32 sums stay float32, as torch's do)."""
    n_vocab, dim = weight.shape
    n_rows = rows.shape[0]
    for b in prange(best_val.shape[0]):
        lo = b * block
        hi = min(lo + block, n_vocab)
        for j in range(n_rows):
            best_val[b, j] = -np.inf
            best_idx[b, j] = lo
        for n in range(lo, hi):
            for j in range(n_rows):
                acc = zero
                for t in range(dim):
                    acc += weight[n, t] * rows[j, t]
                if acc > best_val[b, j]:  # strict: a tie keeps the lower id
                    best_val[b, j] = acc
                    best_idx[b, j] = n


def streams(head: nn.Module, softcap: float | None) -> bool:
    """Whether `greedy_argmax` can stand in for `head(h).argmax(-1)`: a float32 (or float64, as the tests'
    tiny models have) weight without bias, and no soft-cap (a saturated tanh can tie tokens the raw scores
    order, and torch's argmax would then pick the first of them)."""
    weight = getattr(head, "weight", None)
    return (
        isinstance(weight, torch.Tensor)
        and weight.dtype in _NUMPY_TYPES
        and weight.dim() == 2
        and weight.is_contiguous()
        and getattr(head, "bias", None) is None
        and softcap is None
    )


def greedy_argmax(weight: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """argmax over the vocabulary of weight @ h for every row h of hidden [..., d]; shape hidden.shape[:-1].
    Runs on torch's thread count (numba's own pool, capped by NUMBA_NUM_THREADS)."""
    w = weight.detach().numpy()
    rows = hidden.detach().reshape(-1, hidden.shape[-1]).to(weight.dtype).contiguous().numpy()
    n_blocks = -(-w.shape[0] // BLOCK)
    best_val = np.empty((n_blocks, rows.shape[0]), w.dtype)
    best_idx = np.empty((n_blocks, rows.shape[0]), np.int64)
    # engine.threads.set_threads clamps the same way, but importing it loads the packed engine's kernels.
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    _block_argmax(w, rows, BLOCK, _NUMPY_TYPES[weight.dtype](0), best_val, best_idx)
    # argmax over blocks returns the first block holding the maximum: the lowest id among tied tokens.
    tokens = best_idx[best_val.argmax(axis=0), np.arange(rows.shape[0])]
    return torch.from_numpy(tokens).view(hidden.shape[:-1])
