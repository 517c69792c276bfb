"""Results of another report shown beside this one without retraining: the from-scratch models of the
committed quick profile, beside the pretrained start."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from beexformer.errors import BeexError

KEPT = ("metric_no_exit", "metric_early_exit", "flops_saved", "mean_exit_block", "size_ratio", "train_minutes")


@dataclass(frozen=True)
class ReferenceEntry:
    """One (task, variant) of the other report: its seeds and the mean/std/n of the numbers shown."""

    task: str
    variant: str
    seeds: list[int]
    stats: dict[str, dict[str, Any]]  # name in KEPT -> {"n", "mean", "std", "min", "max"}
    exit_histogram: list[int]
    exit_rule: str
    exit_threshold: float | None
    packed_bytes: int | None
    steps: int


@dataclass(frozen=True)
class Reference:
    source: str  # repository path of the results JSON
    command: str  # the command that made it
    profile: str
    entries: list[ReferenceEntry]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reference:
        return cls(**{**data, "entries": [ReferenceEntry(**e) for e in data["entries"]]})

    def get(self, task: str, variant: str) -> ReferenceEntry | None:
        return next((e for e in self.entries if (e.task, e.variant) == (task, variant)), None)


def load_reference(path: str | Path, tasks: list[str], variants: tuple[str, ...] = ("W1A32", "W1A1")) -> Reference:
    """The main-group entries of `tasks` x `variants` from a results JSON written by this report."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BeexError(f"{path}: cannot read the from-scratch results ({err})") from None
    entries = []
    for task in tasks:
        for variant in variants:
            agg = results["aggregate"].get(f"main|{task}|{variant}")
            if agg is None:
                continue
            first = results["runs"][agg["run_ids"][0]]
            entries.append(
                ReferenceEntry(
                    task=task,
                    variant=variant,
                    seeds=agg["seeds"],
                    stats={name: agg[name] for name in KEPT},
                    exit_histogram=agg["exit_histogram"],
                    exit_rule=agg["exit_rule"],
                    exit_threshold=agg["exit_threshold"],
                    packed_bytes=first["size"].get("packed_bytes"),
                    steps=first["trained_steps"],
                )
            )
    return Reference(str(path), results.get("command", ""), results["profile"]["name"], entries)
