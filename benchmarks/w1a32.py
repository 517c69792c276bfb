"""Which W1A32 product (float activations, +-1 weights with a per-row scale) is fastest, and which are exact.

    python benchmarks/w1a32.py [--reps 50] [--threads 1]

On the linear shapes of MiniLM-L6 (d = 384, FFN 1536) at one sentence (25 tokens) and at a batch of 32
(800 tokens), it times y = x @ (alpha * sign W)^T + b computed by

- `blas-unpacked`: numpy's sgemm on the weight unpacked once to alpha * sign(W) in float32: the very operand
  PyTorch multiplies by (what the packed runtime did until it had `sign_gemm`);
- `engine-sign-gemm`: the runtime's `kernels.sign_gemm`, no unpacking: y = alpha * (2 * sum of x over the +1
  inputs - sum of x), one masked vector add per 16 products with the sums in registers (`engine.simd`), the
  signs packed along the outputs (one bit per weight is all that is read);
- `torch-f32`: PyTorch's float32 linear on the same operand (exact; not usable by the runtime, which does not
  import torch: a reference for how fast this CPU's best sgemm is);
- `torch-int8-vnni`: PyTorch's dynamic int8 linear (fbgemm, VNNI on this CPU): activations rounded to int8 per
  tensor at run time, so it computes another function; timed for reference only;
- `torch-bf16`: the same product in bfloat16 (the +-1 weights are exact in bf16, the activations are not):
  another function too, for reference.

Each row gives the median time, the ratio against `blas-unpacked`, and the largest |difference| from the
float64 product (exact means float32 rounding only, < 1e-4 relative here). Writes benchmarks/results/w1a32.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES = [(25, 384, 1152), (25, 384, 1536), (25, 1536, 384), (800, 384, 1536), (800, 1536, 384)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "w1a32.json"))
    return parser.parse_args()


ARGS = parse_args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from beexformer.engine import cpu  # noqa: E402
from beexformer.engine.kernels import SERIAL  # noqa: E402
from beexformer.engine.packing import pack_signs, sign_pm1  # noqa: E402


def median_time(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((n, k)).astype(np.float32)
        alpha = np.abs(w).mean(axis=1).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        wq = (alpha[:, None] * sign_pm1(w)).astype(np.float32)
        wt = np.ascontiguousarray(wq.T)
        signs = pack_signs(np.ascontiguousarray(w.T))  # the runtime's layout: packed along the outputs
        ref = x.astype(np.float64) @ wq.T.astype(np.float64) + bias
        linear = torch.nn.Linear(k, n)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(wq))
            linear.bias.copy_(torch.from_numpy(bias))
        int8 = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, torch.qint8)
        bf16 = torch.nn.Linear(k, n).to(torch.bfloat16)
        with torch.no_grad():
            bf16.weight.copy_(linear.weight.to(torch.bfloat16))
            bf16.bias.copy_(linear.bias.to(torch.bfloat16))
        xt, xb = torch.from_numpy(x), torch.from_numpy(x).to(torch.bfloat16)
        options = {
            "blas-unpacked": lambda x=x, wt=wt, bias=bias: x @ wt + bias,
            "engine-sign-gemm": lambda x=x, s=signs, alpha=alpha, bias=bias: SERIAL.sign_gemm(x, s, alpha, bias),
            "torch-f32": lambda linear=linear, xt=xt: linear(xt),
            "torch-int8-vnni": lambda int8=int8, xt=xt: int8(xt),
            "torch-bf16": lambda bf16=bf16, xb=xb: bf16(xb),
        }
        with torch.no_grad():
            base = None
            for name, fn in options.items():
                seconds = median_time(fn, ARGS.reps)
                out = fn()
                out = out.float().numpy() if isinstance(out, torch.Tensor) else out
                err = float(np.abs(out - ref).max() / np.abs(ref).max())
                base = seconds if base is None else base
                rows.append({"shape": [m, k, n], "option": name, "median_us": 1e6 * seconds,
                             "blas_unpacked_over_this": base / seconds, "max_rel_error": err,
                             "exact": err < 1e-4})  # fmt: skip
                print(f"{m}x{k}x{n} {name:18s} {1e6 * seconds:9.1f} us  x{base / seconds:5.2f}  err {err:.1e}")
    report = {"command": "python benchmarks/w1a32.py " + " ".join(sys.argv[1:]), "cpu": cpu.summary(),
              "threads": ARGS.threads, "reps": ARGS.reps, "rows": rows,
              "note": "shared 2-core machine: other sessions' editing may have run during the timing"}  # fmt: skip
    Path(ARGS.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {ARGS.out}")


if __name__ == "__main__":
    main()
