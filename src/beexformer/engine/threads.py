"""Threading policy: threads only where they pay.

Every kernel exists in a serial and a parallel flavour (`kernels.SERIAL`, `kernels.PARALLEL`). The serial
one never touches numba's thread pool, so a single sentence (at most max_len rows) runs on one core with no
fork/join cost; the parallel one splits rows (blocks of tokens, or sample x head for attention) across
threads. The switch point is a number of rows, measured with `benchmarks/gemm.py` (docs/engine.md): below
it, the fork/join costs more than it saves. During early exit the batch shrinks, so the choice is made
again before every block.
"""

from __future__ import annotations

import os

import numba

from beexformer.engine import kernels

# Rows (tokens in the ragged batch) from which the parallel kernels are used. A single sentence never gets
# there (max_len 128 by default), so batch size 1 is always single-threaded.
MIN_PARALLEL_ROWS = int(os.environ.get("BEEX_MIN_PARALLEL_ROWS", "256"))


def n_threads() -> int:
    return int(numba.get_num_threads())


def set_threads(n: int) -> None:
    """Cap the threads the parallel kernels use (1 disables threading)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def kernels_for(n_rows: int) -> kernels.KernelSet:
    """The kernel flavour for a batch of `n_rows` token rows."""
    if n_rows >= MIN_PARALLEL_ROWS and n_threads() > 1:
        return kernels.PARALLEL
    return kernels.SERIAL
