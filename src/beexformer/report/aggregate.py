"""Mean and spread over seeds of every number a run records, per (group, task, variant).

Pure functions of the results JSON, so the markdown rendered from a JSON is always the same.
"""

from __future__ import annotations

import math
from typing import Any


def stats(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min, max and n of the values that are not None."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return {"n": len(xs), "mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def _latency(record: dict[str, Any], batch: str, key: str) -> float | None:
    lat = record.get("latency")
    if not lat or batch not in lat["batches"]:
        return None
    return lat["batches"][batch][key]


SCALARS = {
    "metric_no_exit": lambda r: r["metric_no_exit"],
    "metric_early_exit": lambda r: r["metric_early_exit"],
    "ee_gain": lambda r: r["metric_early_exit"] - r["metric_no_exit"],
    "flops_saved": lambda r: r["flops_saved"],
    "flops_saved_cap_block2": lambda r: r["flops_saved_cap_block2"],
    "mean_exit_block": lambda r: r["mean_exit_block"],
    "agreement_with_last_exit": lambda r: r["agreement_with_last_exit"],
    "size_ratio": lambda r: r["size"]["size_ratio"],
    "size_ratio_without_tokenizer": lambda r: r["size"].get("size_ratio_without_tokenizer"),
    "packed_metric_early_exit": lambda r: r.get("packed_metric_early_exit"),
    "speedup_b1": lambda r: _latency(r, "1", "speedup_no_exit"),
    "speedup_b64": lambda r: _latency(r, "64", "speedup_no_exit"),
    "speedup_ee_b1": lambda r: _latency(r, "1", "speedup_early_exit"),
    "speedup_ee_b64": lambda r: _latency(r, "64", "speedup_early_exit"),
    "train_minutes": lambda r: r["train_minutes"],
    "train_cpu_minutes": lambda r: r.get("train_cpu_minutes"),
    "eval_minutes": lambda r: r["eval_minutes"],
}


def group_key(record: dict[str, Any]) -> str:
    spec = record["spec"]
    return f"{spec['group']}|{spec['task']}|{spec['variant']}"


def aggregate(results: dict[str, Any]) -> dict[str, Any]:
    """{"group|task|variant": {scalar: stats, "seeds": [...], "exit_histogram": summed, "rules": ...,
    "sweep": rows averaged over seeds by (rule, threshold)}}; keys in the order runs first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in results["runs"].values():
        groups.setdefault(group_key(record), []).append(record)
    out: dict[str, Any] = {}
    for key, records in groups.items():
        first = records[0]
        entry: dict[str, Any] = {
            "group": first["spec"]["group"],
            "task": first["spec"]["task"],
            "variant": first["spec"]["variant"],
            "metric_name": first["metric_name"],
            "n_dev": first["n_dev"],
            "n_blocks": first["config"]["n_blocks"],
            "exit_rule": first["exit_rule"],
            "exit_threshold": first["exit_threshold"],
            "seeds": [r["spec"]["seed"] for r in records],
            "run_ids": [r["spec"]["run_id"] for r in records],
        }
        for name, get in SCALARS.items():
            entry[name] = stats([get(r) for r in records])
        n_blocks = entry["n_blocks"]
        hist = [0] * n_blocks
        for r in records:
            for c, count in enumerate(r["exit_histogram"]):
                hist[c] += count
        entry["exit_histogram"] = hist
        entry["rules"] = {
            name: {
                "threshold": first["rules"][name]["threshold"],
                "metric": stats([r["rules"][name]["metric"] for r in records]),
                "flops_saved": stats([r["rules"][name]["flops_saved"] for r in records]),
                "mean_exit_block": stats([r["rules"][name]["mean_exit_block"] for r in records]),
            }
            for name in first["rules"]
        }
        sweep: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        for r in records:
            for row in r["sweep"]:
                sweep.setdefault((row["rule"], row["threshold"]), []).append(row)
        entry["sweep"] = [
            {
                "rule": rule,
                "threshold": threshold,
                "metric": stats([row["metric"] for row in rows])["mean"],
                "flops_saved": stats([row["flops_saved"] for row in rows])["mean"],
                "mean_exit_block": stats([row["mean_exit_block"] for row in rows])["mean"],
            }
            for (rule, threshold), rows in sweep.items()
        ]
        out[key] = entry
    return out
