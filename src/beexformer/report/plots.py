"""The report's PNGs, drawn from the aggregated results alone (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

VARIANT_COLOURS = {"W1A32": "tab:blue", "W1A1": "tab:orange", "float32": "tab:green"}
RULE_LABELS = {
    "fractional_entropy": "fractional entropy (paper)",
    "entropy": "absolute entropy (DeeBERT)",
    "patience": "patience (PABEE)",
    "max_prob": "max probability",
    "regression_patience": "score patience (regression)",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp or version in the PNG metadata: the same results give the same file.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    fig.clf()


def _pct(stat: dict[str, Any]) -> tuple[float, float]:
    return 100 * (stat["mean"] or 0.0), 100 * (stat["std"] or 0.0)


def plot_metric_summary(entries: list[dict[str, Any]], tasks: list[str], variants: list[str], path: Path) -> None:
    """Dev metric without (hatched) and with early exit per task and variant, mean and std over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * len(tasks) + 2), 4.4))
    width = 0.8 / (2 * len(variants))
    index = {(e["task"], e["variant"]): e for e in entries}
    for v, variant in enumerate(variants):
        for k, (key, hatch) in enumerate((("metric_no_exit", "//"), ("metric_early_exit", ""))):
            xs, ys, errs = [], [], []
            for t, task in enumerate(tasks):
                e = index.get((task, variant))
                if e is None:
                    continue
                mean, std = _pct(e[key])
                xs.append(t - 0.4 + width * (2 * v + k + 0.5))
                ys.append(mean)
                errs.append(std)
            label = f"{variant}, {'early exit' if k else 'no exit'}"
            ax.bar(xs, ys, width, yerr=errs, capsize=2, color=VARIANT_COLOURS.get(variant, "grey"),
                   hatch=hatch, edgecolor="white" if not hatch else "black", lw=0.3, label=label)  # fmt: skip
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks)
    ax.set_ylabel("dev metric (%; CoLA: MCC, STS-B: Pearson)")
    ax.set_title("Dev metric: hatched = all blocks, solid = early exit\n(error bars: std over seeds)", fontsize=10)
    ax.axhline(0, color="black", lw=0.5)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=len(variants), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_exit_histograms(entries: list[dict[str, Any]], task: str, path: Path) -> None:
    """Share of dev samples leaving at each block, one bar group per block, one bar per variant."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / max(len(entries), 1)
    for v, e in enumerate(entries):
        hist = e["exit_histogram"]
        total = max(sum(hist), 1)
        xs = [c + 1 - 0.4 + width * (v + 0.5) for c in range(len(hist))]
        ax.bar(xs, [100 * h / total for h in hist], width, color=VARIANT_COLOURS.get(e["variant"], "grey"),
               label=f"{e['variant']} (mean block {e['mean_exit_block']['mean']:.2f})")  # fmt: skip
    n_blocks = max(len(e["exit_histogram"]) for e in entries)
    ax.set_xticks(range(1, n_blocks + 1))
    ax.set_xlabel("exit block")
    ax.set_ylabel("dev samples (%)")
    rule = entries[0]["exit_rule"] if entries else ""
    threshold = entries[0]["exit_threshold"] if entries else ""
    ax.set_title(f"{task}: where samples exit ({rule}, threshold {threshold})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_sweeps(entries: list[dict[str, Any]], task: str, path: Path) -> None:
    """Dev metric against FLOPs saved for each exit rule over its threshold grid, one panel per variant;
    a star marks each rule's a-priori default threshold, the dashed line the metric without early exit."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(entries), figsize=(4.4 * len(entries), 3.8), squeeze=False)
    for ax, e in zip(axes[0], entries, strict=True):
        baseline = next((r for r in e["sweep"] if r["rule"] == "none"), None)
        for rule in dict.fromkeys(r["rule"] for r in e["sweep"] if r["rule"] != "none"):
            pts = sorted((100 * r["flops_saved"], 100 * r["metric"]) for r in e["sweep"] if r["rule"] == rule)
            (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1,
                              label=RULE_LABELS.get(rule, rule))  # fmt: skip
            default = e["rules"].get(rule)
            if default is not None:
                ax.plot(100 * default["flops_saved"]["mean"], 100 * default["metric"]["mean"], marker="*",
                        ms=11, color=line.get_color(), mec="black", mew=0.5)  # fmt: skip
        if baseline is not None:
            ax.axhline(100 * baseline["metric"], color="grey", ls="--", lw=1, label="no early exit")
        ax.set_title(f"{task} {e['variant']}", fontsize=10)
        ax.set_xlabel("FLOPs saved (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"dev {entries[0]['metric_name']} (%)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_ablations(entries: list[dict[str, Any]], task: str, path: Path) -> None:
    """Ablations of one task: metric without (hatched) and with early exit, and FLOPs saved on the right."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    names = [e["variant"] for e in entries]
    for k, (key, hatch) in enumerate((("metric_no_exit", "//"), ("metric_early_exit", ""))):
        vals = [_pct(e[key]) for e in entries]
        ax.bar([i - 0.2 + 0.4 * k for i in range(len(entries))], [v[0] for v in vals], 0.4,
               yerr=[v[1] for v in vals], capsize=2, color="tab:blue", hatch=hatch,
               edgecolor="black" if hatch else "white", lw=0.3,
               label="no exit" if k == 0 else "early exit")  # fmt: skip
    ax.set_xticks(range(len(entries)))
    ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"dev {entries[0]['metric_name']} (%)")
    ax.set_title(f"Ablations on {task} (W1A32)")
    ax.grid(axis="y", alpha=0.3)
    right = ax.twinx()
    right.plot(range(len(entries)), [_pct(e["flops_saved"])[0] for e in entries], "ko", label="FLOPs saved")
    right.set_ylabel("FLOPs saved by early exit (%)")
    right.set_ylim(0, 100)
    lines = ax.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
