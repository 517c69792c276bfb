"""Kernel-level speed: the XNOR-popcount GEMM against float32 matmul (numpy and torch), same shapes, one run.

    python benchmarks/gemm.py [--threads 1] [--reps 30]

Times are medians of interleaved repetitions; printed as ratios (float time / binary time), since the machine
is shared and absolute times move. "binary" includes packing the float activations (sign + per-row scale), as
for the first binary layer after a LayerNorm; "binary, packed input" is a layer fed by a fused epilogue.
Every binary result is checked against the exact integer product first.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

if __name__ == "__main__":  # BLAS pools read their thread count once, at import: set it before numpy loads
    _threads = os.environ.get("BEEX_GEMM_THREADS") or next(
        (a.split("=")[1] for a in os.sys.argv if a.startswith("--threads=")), None
    )
    if "--threads" in os.sys.argv:
        _threads = os.sys.argv[os.sys.argv.index("--threads") + 1]
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads or "1"

import numpy as np  # noqa: E402

# (M, K, N): one sentence (25 tokens) through d=256 q|k|v and SLFN s1|f1; the anchors' shapes; a batch of 64.
SHAPES = [(1, 256, 768), (25, 256, 768), (25, 256, 1024), (25, 512, 256), (1, 512, 2048), (128, 512, 512),
          (128, 512, 2048), (1600, 256, 768)]  # fmt: skip


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_gemm(shapes=SHAPES, reps: int = 30, threads: int = 1, seed: int = 0) -> list[dict]:
    import torch

    from beexformer.engine.packing import pack_signs, pack_weight, sign_pm1
    from beexformer.engine.threads import kernels_for

    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    rows = []
    for m, k, n in shapes:
        a = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        wt = np.ascontiguousarray(w.T)
        a_t, wt_t = torch.from_numpy(a), torch.from_numpy(wt)
        wp = pack_weight(w)
        alpha = np.abs(w).mean(axis=1).astype(np.float32)
        zeros = np.zeros(n, dtype=np.float32)
        ks = kernels_for(m)
        ap, beta = ks.pack_rows(a, np.float32(0.0))
        exact = np.array_equal(ks.bgemm_int(pack_signs(a), wp, k), sign_pm1(a).astype(np.int64) @ sign_pm1(w).T)
        candidates = {
            "numpy float32": lambda a=a, wt=wt: a @ wt,
            "torch float32": lambda a_t=a_t, wt_t=wt_t: torch.mm(a_t, wt_t),
            "binary": lambda a=a, wp=wp, alpha=alpha, z=zeros, k=k, ks=ks: ks.bgemm_affine(
                *ks.pack_rows(a, np.float32(0.0)), wp, alpha, z, z, k
            ),
            "binary, packed input": lambda ap=ap, beta=beta, wp=wp, alpha=alpha, z=zeros, k=k, ks=ks: ks.bgemm_affine(
                ap, beta, wp, alpha, z, z, k
            ),
        }
        for fn in candidates.values():
            fn()
        times = {name: [] for name in candidates}
        inner = max(1, int(2e7 // (m * k * n)))  # repeat tiny shapes so a sample is not just timer noise
        for _ in range(reps):
            for name, fn in candidates.items():
                times[name].append(_timed(lambda fn=fn, inner=inner: [fn() for _ in range(inner)]) / inner)
        med = {name: float(np.median(t)) for name, t in times.items()}
        rows.append(
            {
                "M": m, "K": k, "N": n, "exact": bool(exact), "threads": threads,
                "median_seconds": med,
                "numpy_f32_over_binary": med["numpy float32"] / med["binary"],
                "torch_f32_over_binary": med["torch float32"] / med["binary"],
                "numpy_f32_over_binary_packed_input": med["numpy float32"] / med["binary, packed input"],
                "torch_f32_over_binary_packed_input": med["torch float32"] / med["binary, packed input"],
            }
        )  # fmt: skip
    return rows


def gemm_table(rows: list[dict]) -> str:
    lines = [
        "| M x K x N | exact | numpy f32 / binary | torch f32 / binary | numpy f32 / binary (packed input) "
        "| torch f32 / binary (packed input) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['M']} x {r['K']} x {r['N']} | {'yes' if r['exact'] else 'NO'} "
            f"| {r['numpy_f32_over_binary']:.1f}x "
            f"| {r['torch_f32_over_binary']:.1f}x | {r['numpy_f32_over_binary_packed_input']:.1f}x "
            f"| {r['torch_f32_over_binary_packed_input']:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gemm.json"))
    args = parser.parse_args()
    from beexformer.engine import cpu
    from beexformer.engine.threads import set_threads

    set_threads(args.threads)
    rows = bench_gemm(reps=args.reps, threads=args.threads)
    info = cpu.summary()
    print(f"CPU: {info['model']} ({info['llvm_cpu']}); popcount: {info['popcount_path']}")
    print(f"flags: {' '.join(info['flags'])}")
    print(gemm_table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"cpu": info, "rows": rows}, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(gemm_table(rows) + "\n")


if __name__ == "__main__":
    main()
