"""When a result counts: above the trivial baseline, and a FLOPs saving that comes from early exit at all.

Two ways a number can look like a success without being one, both found in our own reports:
- a dev metric at or below the best constant answer (a model that learned nothing about the text scores it);
- "FLOPs saved" when every sample leaves at the earliest block the exit rule allows: the rule then did not
  tell easy inputs from hard ones, and the saving says only how early that block is (RTE and WNLI in the
  quick report, STS-B under an entropy rule, which sees entropy 0 on a one-output head).
"""

from __future__ import annotations

from collections.abc import Sequence

from beexformer.exits import build_exit_rule


def beats(value: float | None, baseline: float) -> bool | None:
    """Strictly above the bar (None: no value). Equal to a constant answer has learned nothing."""
    return None if value is None else value > baseline + 1e-12


def all_at_first_exit(histogram: Sequence[int], rule: str, threshold: float | None) -> int | None:
    """The block where every sample left, when that is the earliest block `rule` allows; else None."""
    first = build_exit_rule(rule, threshold).first_exit_block
    total = sum(histogram)
    if total == 0 or first > len(histogram):
        return None
    return first if histogram[first - 1] == total else None


def flops_goal_met(
    flops_saved: float | None, goal: float, histogram: Sequence[int], rule: str, threshold: float | None
) -> bool | None:
    """The FLOPs-saved goal is met when the saving reaches it and not every sample left at the first block
    the rule allows."""
    if flops_saved is None:
        return None
    return flops_saved >= goal and all_at_first_exit(histogram, rule, threshold) is None
