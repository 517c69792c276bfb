"""Reproduction report: train and evaluate BEExformer on GLUE and write docs/results.md from a results JSON.

    python benchmarks/reproduce.py --data-dir ../shared/data/glue --profile full|quick|ci \
        --out benchmarks/results/reproduce --docs docs/results.md [--work-dir runs/reproduce-quick]
    python benchmarks/reproduce.py --render-only     # markdown and plots from the JSON alone

The logic lives in `beexformer.report` (plan, runner, aggregate, render, plots); see docs/reproduce.md.
"""

from __future__ import annotations

import sys

from beexformer.report.main import main

if __name__ == "__main__":
    sys.exit(main())
