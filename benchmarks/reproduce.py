"""Reproduction report: train and evaluate BEExformer on GLUE and write docs/results.md from a results JSON.

    python benchmarks/reproduce.py --data-dir ../shared/data/glue --profile full|quick|ci \
        --out benchmarks/results/reproduce --docs docs/results.md [--work-dir runs/reproduce-quick]
    python benchmarks/reproduce.py --render-only     # markdown and plots from the JSON alone

The logic lives in `beexformer.report` (plan, runner, aggregate, render, plots); see docs/reproduce.md.
"""

from __future__ import annotations

import os
import sys

# BLAS thread pools read these once, when numpy loads: set them before any import. numpy's own thread pool
# (the packed runtime's float matmuls, W1A32 above all) otherwise runs 2 threads beside the 1-thread torch it
# is compared with, and on a loaded machine those threads spin: a W1A32 batch-1 latency of 550 ms per sample
# instead of 5.5 ms was measured that way.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from beexformer.report.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
