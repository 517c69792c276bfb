"""Wall-clock latency of the packed 1-bit runtime against float32 PyTorch, on real dev inputs.

Both sides start from the same token ids (tokenization costs the same for both). PyTorch runs the float32
twin of the trained model (`BEExformer.float_twin`: the effective weights alpha * sign(W) stored as float32),
the baseline a user without the engine would deploy. Candidates are timed in interleaved repetitions and the
median is kept, because the machine may be shared: a burst of load then hits every candidate alike.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from beexformer.exits import ExitRule


def _batches(ids: list, segs: list, batch_size: int) -> list[tuple[list, list]]:
    """Batch 1 in the data's order; larger batches sorted by length (as `predict` does)."""
    if batch_size == 1:
        return [([ids[i]], [segs[i]]) for i in range(len(ids))]
    order = np.argsort([len(s) for s in ids], kind="stable")
    return [
        ([ids[i] for i in order[s : s + batch_size]], [segs[i] for i in order[s : s + batch_size]])
        for s in range(0, len(ids), batch_size)
    ]


def measure_latency(
    torch_model,
    packed,
    ids: list,
    segs: list,
    rule: ExitRule,
    batch_sizes: tuple[int, ...] = (1, 64),
    reps: int = 3,
    threads: int = 1,
    batch1_samples: int | None = None,
) -> dict[str, Any]:
    """Median milliseconds per sample of: float32 PyTorch (all blocks, and with early exit) and the packed
    runtime (all blocks, and with early exit), at each batch size, with `threads` threads for both.

    Batch 1 runs only the first `batch1_samples` inputs (default: all): one sample at a time is the slow
    case, and a few dozen of them already give a stable median."""
    import torch

    from beexformer.data.collate import pad_sequences
    from beexformer.engine.threads import n_threads, set_threads

    torch_threads, numba_threads = torch.get_num_threads(), n_threads()
    torch.set_num_threads(threads)
    set_threads(threads)
    twin = torch_model.float_twin().eval()
    out: dict[str, Any] = {"n_samples": len(ids), "reps": reps, "threads": threads, "batches": {}}
    try:
        for batch_size in batch_sizes:
            n = len(ids) if batch_size > 1 or batch1_samples is None else min(len(ids), batch1_samples)
            group = _batches(ids[:n], segs[:n], batch_size)
            tgroup = [pad_sequences(i, s) for i, s in group]

            def torch_full(tgroup=tgroup) -> None:
                with torch.no_grad():
                    for args in tgroup:
                        twin(*args)

            def torch_ee(tgroup=tgroup) -> None:
                for args in tgroup:
                    twin.early_exit(*args, rule)

            def packed_full(group=group) -> None:
                for i, s in group:
                    packed.run(i, s)

            def packed_ee(group=group) -> None:
                for i, s in group:
                    packed.run(i, s, rule)

            candidates = {
                "torch_f32": torch_full,
                "torch_f32_ee": torch_ee,
                "packed": packed_full,
                "packed_ee": packed_ee,
            }
            for fn in candidates.values():  # warm-up: numba compilation or cache load, allocator, caches
                fn()
            times: dict[str, list[float]] = {name: [] for name in candidates}
            for _ in range(reps):
                for name, fn in candidates.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            ms = {name: 1000 * float(np.median(t)) / n for name, t in times.items()}
            packed_blocks = np.concatenate([packed.run(i, s, rule).exit_block for i, s in group])
            out["batches"][str(batch_size)] = {
                "n_samples": n,
                "ms_per_sample": ms,
                "speedup_no_exit": ms["torch_f32"] / ms["packed"],
                "speedup_early_exit": ms["torch_f32_ee"] / ms["packed_ee"],
                "speedup_packed_ee_vs_torch_full": ms["torch_f32"] / ms["packed_ee"],
                "early_exit_speedup_packed": ms["packed"] / ms["packed_ee"],
                "packed_mean_exit_block": float(packed_blocks.mean()),
            }
    finally:
        torch.set_num_threads(torch_threads)
        set_threads(numba_threads)
    return out
