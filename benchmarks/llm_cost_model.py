"""Cost model of early-exit and self-speculative decoding, fitted to the costs measured in the same benchmark
run, and its extrapolation to other model shapes.

The decoders count their work (decoder-layer calls by number of rows, final-head calls by rows, gate calls,
K/V projections of the copy fill). Predicted decode time of a mode = sum over that work of the measured unit
costs; the plain baseline does L one-row layer calls and one one-row head call per token. The predicted ratio
is compared with the measured one; the gap is per-call Python overhead and machine noise.

`predict_before_run` predicts each mode's speed-up over this package's full decoding *before* the run, from
the unit costs measured at its start and the calibration's first-exit shares and agreement at the mode's level
(closed forms below: early exit with the exact lazy fill, and self-speculation with dynamic drafts); the
benchmark prints the prediction beside the measurement.

`fit` then fits the measured wall time of every mode against `full` (this package's decoder without exits,
on the same items, so prefill and per-token bookkeeping cancel):
    seconds(mode) - seconds(full) = a * (work(mode) - work(full), priced at the unit costs) + b * gate calls
by least squares: a is how much a priced millisecond of layer/head work really costs inside decoding, b the
real cost of asking a gate (head, log-softmax, entropy, Python around it), which the microbenchmark's
gate_ms undercounts.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    d: int
    d_ff: int
    d_kv: int
    vocab: int
    gate_classes: int = 2049
    d_attn: int = 0  # width of the query / output projections (0: d; Gemma-3-270M: 4 heads x 256)

    @property
    def layer_params(self) -> int:
        return 2 * self.d * (self.d_attn or self.d) + 2 * self.d * self.d_kv + 3 * self.d * self.d_ff


SMOLLM2_135M = Shape("SmolLM2-135M", 30, 576, 1536, 192, 49152)
LLAMA_7B = Shape("LLaMA-2-7B", 32, 4096, 11008, 4096, 32000)
LLAMA3_8B = Shape("LLaMA-3-8B", 32, 4096, 14336, 1024, 128256)


GEMMA3_270M = Shape("Gemma-3-270M", 18, 640, 2048, 256, 262144, 4097, d_attn=1024)


def _interp(table: dict[int, float], k: int) -> float:
    keys = sorted(table)
    if k in table:
        return table[k]
    if k > keys[-1]:
        # Linear extrapolation from the last two points.
        a, b = keys[-2], keys[-1]
        return table[b] + (table[b] - table[a]) / (b - a) * (k - b)
    lo = max(x for x in keys if x < k)
    hi = min(x for x in keys if x > k)
    return table[lo] + (table[hi] - table[lo]) * (k - lo) / (hi - lo)


@dataclass(frozen=True)
class UnitCosts:
    layer: dict[int, float]  # ms per decoder-layer call with k rows
    head: dict[int, float]  # ms per final norm + head call with k rows
    gate: float
    kv: float
    probe: float = 0.0  # a probe gate's call that does not fire
    probe_fired: float = 0.0  # the exit head a probe gate runs when it fires

    def work_ms(self, work: dict[str, Any]) -> float:
        total = sum(n * _interp(self.layer, int(k)) for k, n in work["layer_calls"].items())
        total += sum(n * _interp(self.head, int(k)) for k, n in work["head_calls"].items())
        if work.get("gate_kind") == "probe":
            total += work["gate_calls"] * self.probe + work["gate_head_runs"] * self.probe_fired
        else:
            total += work["gate_calls"] * self.gate
        return total + work["kv_projections"] * self.kv

    def plain_ms(self, tokens: int, layers: int) -> float:
        return tokens * (layers * self.layer[1] + self.head[1])


@dataclass(frozen=True)
class GateCosts:
    """ms per gate call that does not fire (entropy gate: head + entropy; probe gate: the probe) and the extra
    ms of one that fires (a probe gate then runs the exit head; an entropy gate has run it already)."""

    call: float
    fired: float


@dataclass(frozen=True)
class ExitProfile:
    """Per gate layer (depth order): share of tokens that first exit there and their agreement, from the
    calibration with every one of these layers gating."""

    layers: list[int]
    shares: list[float]
    agreement: list[float]

    @property
    def exit_share(self) -> float:
        return sum(self.shares)

    @property
    def mean_exit_layer(self) -> float:
        total = self.exit_share
        return sum(layer * s for layer, s in zip(self.layers, self.shares, strict=True)) / total if total else 0.0

    @property
    def mean_agreement(self) -> float:
        total = self.exit_share
        pairs = zip(self.shares, self.agreement, strict=True)
        return sum(s * a for s, a in pairs if s > 0) / total if total else 0.0

    def gate_calls_until_exit(self) -> tuple[float, float]:
        """(expected gate calls of a token that exits, of one that does not): a token is asked at every gate
        layer it reaches."""
        total = self.exit_share
        exiting = sum((i + 1) * s for i, s in enumerate(self.shares)) / total if total else 0.0
        return exiting, float(len(self.layers))


def predict_early_exit(unit: UnitCosts, layers: int, gate: GateCosts, prof: ExitProfile) -> float:
    """Speed-up of early exit (lazy recompute) over full decoding: an exited token runs its first l layers
    and later rides along as an extra row in the next full pass for the other L - l (at c(2) - c(1) each); a
    full token runs L layers and the head; every token pays the gate calls up to where it stops."""
    c1, extra_row = unit.layer[1], unit.layer[2] - unit.layer[1]
    calls_exit, calls_full = prof.gate_calls_until_exit()
    cost = (1 - prof.exit_share) * (layers * c1 + unit.head[1] + calls_full * gate.call)
    for layer, share in zip(prof.layers, prof.shares, strict=True):
        cost += share * (layer * c1 + (layers - layer) * extra_row + gate.fired)
    cost += prof.exit_share * calls_exit * gate.call
    return unit.plain_ms(1, layers) / cost


def predict_self_speculative(unit: UnitCosts, layers: int, gate: GateCosts, prof: ExitProfile, max_draft: int) -> float:
    """Speed-up of self-speculation over full decoding. A cycle drafts n tokens (each token is drafted with
    probability q = exit share, independently; n stops at the first token that is not, or at max_draft),
    then verifies them in one pass of n + 1 rows from their mean exit depth on. Drafts are accepted as a
    prefix, each with the calibrated agreement a: tokens per cycle = 1 + a + ... + a^n."""
    q, a, depth = prof.exit_share, prof.mean_agreement, prof.mean_exit_layer
    calls_exit, calls_full = prof.gate_calls_until_exit()
    c1 = unit.layer[1]
    tokens = cost = 0.0
    for n in range(max_draft + 1):
        prob = q**n * (1 - q) if n < max_draft else q**max_draft
        drafts = n * (depth * c1 + calls_exit * gate.call + gate.fired)
        unsure_gates = calls_full * gate.call if n < max_draft else 0.0
        verify = layers * c1 + (layers - depth) * (_interp(unit.layer, n + 1) - c1) + _interp(unit.head, n + 1)
        tokens += prob * (1 + sum(a**i for i in range(1, n + 1)))
        cost += prob * (drafts + unsure_gates + verify)
    return tokens * unit.plain_ms(1, layers) / cost


def exit_profile(calib: Any, alpha: float, gate: str, layers: list[int]) -> ExitProfile:
    """First exits at `alpha` with only `layers` gating, from a `Calibration`: exact where the calibration
    recorded that subset; otherwise the all-layers shares of these layers (the tokens a dropped layer took are
    dropped with it, an underestimate)."""
    recorded = calib.first_exits_for(alpha, gate, layers)
    if recorded is not None:
        pairs = zip(recorded.shares, recorded.agreement, strict=True)
        return ExitProfile(list(recorded.layers), list(recorded.shares), [a if s > 0 else 0.0 for s, a in pairs])
    level = [e for e in calib.level(alpha, gate) if e.layer in layers]
    return ExitProfile(
        [e.layer for e in level],
        [e.first_exit_share for e in level],
        [e.first_exit_agreement if e.first_exit_share > 0 else 0.0 for e in level],
    )


def predict_mode(mode: str, unit: UnitCosts, layers: int, gate: GateCosts, prof: ExitProfile, max_draft: int) -> float:
    """Speed-up over full decoding of `mode` ("early-exit" or "self-speculative") with this exit profile."""
    if mode == "early-exit":
        return predict_early_exit(unit, layers, gate, prof)
    return predict_self_speculative(unit, layers, gate, prof, max_draft)


def best_gate_layers(
    calib: Any, alpha: float, gate: str, mode: str, unit: UnitCosts, layers: int, costs: GateCosts, max_draft: int
) -> tuple[list[int], float]:
    """The gate layers (of the calibrated ones, every subset the calibration recorded) whose predicted speed-up
    over full decoding is the largest, and that speed-up. A layer whose exits save less than what asking its
    gate costs every token that reaches it is left out this way; a gate whose exits never pay leaves the mode
    with no gate at all (predicted 1.0). Ties go to fewer layers (less to ask).

    Each layer's threshold is set alone; with several layers gating, the later ones get the tokens the earlier
    ones did not take, and their exits agree less. For early exit, whose output is the exits' tokens, a subset
    whose exits agree less than alpha on the calibration text is not a candidate (one layer alone always is).
    Self-speculation's output does not depend on it; the cost model prices its acceptance instead."""
    all_layers = [e.layer for e in calib.level(alpha, gate)]
    candidates = [list(s.layers) for s in calib.subsets if math.isclose(s.alpha, alpha) and s.gate == gate]
    best: tuple[list[int], float] = ([], 1.0)
    for subset in candidates or [all_layers]:
        prof = exit_profile(calib, alpha, gate, subset)
        if mode == "early-exit" and len(subset) > 1 and prof.mean_agreement < alpha - 1e-9:
            continue
        speed = predict_mode(mode, unit, layers, costs, prof, max_draft)
        if speed > best[1] + 1e-9 or (abs(speed - best[1]) <= 1e-9 and len(subset) < len(best[0])):
            best = (subset, speed)
    return best


def measured_costs(costs: dict[str, Any], gate_dtype: str = "float32") -> UnitCosts:
    """Unit costs of a run. The gate is priced cold (weights evicted by the layers run since the last gate)
    in the precision the run gated with, when the run measured it; older runs only timed it in cache."""
    layer = {int(k): v for k, v in costs["layer_ms"].items()}
    head = {1: costs["full_head_ms"], 5: costs["full_head_ms_5rows"]}
    cold_key = "gate_ms_cold" if gate_dtype == "float32" else f"gate_ms_cold_{gate_dtype}"
    return UnitCosts(
        layer,
        head,
        costs.get(cold_key, costs["gate_ms"]),
        costs.get("kv_ms", 0.0),
        costs.get("probe_call_ms_cold", 0.0),
        costs.get("gate_head_ms_cold", 0.0),
    )


def _gate_dtype(report: dict[str, Any], workload: str) -> str:
    return report.get("gate_dtype", {}).get(workload, "float32")


def scaled_costs(measured: UnitCosts, shape: Shape, base: Shape, beta: float = 0.05) -> UnitCosts:
    """Unit costs of `shape` in units of its own one-row layer (so ratios are what matter)."""
    c = 1.0
    per_param = c / shape.layer_params
    layer = {k: c * (1 + beta * (k - 1)) for k in (1, 2, 3, 4, 5, 8)}
    head = {k: shape.vocab * shape.d * per_param * (1 + beta * (k - 1)) for k in (1, 5)}
    return UnitCosts(layer, head, shape.gate_classes * shape.d * per_param, 2 * shape.d * shape.d_kv * per_param)


def rescale_work(work: dict[str, Any], base: Shape, shape: Shape) -> dict[str, Any]:
    """Same exits at the same relative depth: layer calls scale with the number of layers."""
    f = shape.layers / base.layers
    return {
        "layer_calls": {k: n * f for k, n in work["layer_calls"].items()},
        "head_calls": work["head_calls"],
        "gate_calls": work["gate_calls"],
        "kv_projections": work["kv_projections"] * f,
    }


def predict(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each mode's work priced at the run's unit costs (after the run), and extrapolated to 7B shapes."""
    base = SMOLLM2_135M if report.get("num_layers", 30) == SMOLLM2_135M.layers else GEMMA3_270M
    rows = []
    for wname, modes in report["workloads"].items():
        unit = measured_costs(report["costs_ms"], _gate_dtype(report, wname))
        for name, r in modes.items():
            if "work" not in r:
                continue
            tokens = r["work"]["decode_tokens"]
            mode_ms = unit.work_ms(r["work"])
            row = {
                "workload": wname,
                "mode": name,
                "measured_ratio": r["ratio"],
                "predicted_ratio": unit.plain_ms(tokens, base.layers) / mode_ms,
            }
            for shape in (LLAMA_7B, LLAMA3_8B):
                su = scaled_costs(unit, shape, base)
                work = rescale_work(r["work"], base, shape)
                row[f"predicted_{shape.name}"] = su.plain_ms(tokens, shape.layers) / su.work_ms(work)
            rows.append(row)
    return rows


def fit(report: dict[str, Any]) -> dict[str, Any]:
    """Least-squares fit of each mode's seconds minus full's to a * priced extra work + b * gate calls."""
    import numpy as np

    rows, target, labels = [], [], []
    gate_ms = []
    for wname, modes in report["workloads"].items():
        unit = measured_costs(report["costs_ms"], _gate_dtype(report, wname))
        gate_ms.append(unit.gate)
        full = modes["full"]
        full_s, full_ms = full["tokens"] / full["tokens_per_s"], unit.work_ms(full["work"])
        for name, r in modes.items():
            if "work" not in r or name == "full":
                continue
            rows.append([(unit.work_ms(r["work"]) - full_ms) / 1000, r["work"]["gate_calls"] / 1000])
            target.append(r["tokens"] / r["tokens_per_s"] - full_s)
            labels.append((wname, name, full_s))
    x, y = np.array(rows), np.array(target)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    fitted = x @ coef
    out_rows = []
    for (wname, name, full_s), yi, fi in zip(labels, y, fitted, strict=True):
        modes = report["workloads"][wname]
        hf_s_per_token = modes["hf"]["tokens_per_s"] ** -1
        tokens = modes[name]["tokens"]
        out_rows.append(
            {
                "workload": wname,
                "mode": name,
                "measured_ratio": modes[name]["ratio"],
                "fitted_ratio": tokens * hf_s_per_token / (full_s + fi),
                "residual_s": float(yi - fi),
            }
        )
    return {
        "work_scale": float(coef[0]),
        "gate_call_ms": float(coef[1]),
        "gate_call_ms_microbenchmark": max(gate_ms),
        "layer_ms": unit.layer[1],
        "rows": out_rows,
    }


def fit_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"fitted: seconds - seconds(full) = {result['work_scale']:.3f} x (extra work at the unit costs) + "
        f"{result['gate_call_ms']:.3f} ms x gate calls (the microbenchmark's gate: "
        f"{result['gate_call_ms_microbenchmark']:.3f} ms; one decoder layer: {result['layer_ms']:.3f} ms)",
        "",
        "| workload | mode | measured ratio | fitted ratio | residual (s) |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['measured_ratio']:.3f} | {r['fitted_ratio']:.3f} | "
            f"{r['residual_s']:+.2f} |"
        )
    return "\n".join(lines)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | mode | measured ratio | cost-model ratio (this CPU) | LLaMA-2-7B shape | LLaMA-3-8B shape |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['mode']} | {r['measured_ratio']:.3f} | {r['predicted_ratio']:.3f} | "
            f"{r['predicted_LLaMA-2-7B']:.3f} | {r['predicted_LLaMA-3-8B']:.3f} |"
        )
    return "\n".join(lines)


def speculative_speedup(unit: UnitCosts, layers: int, draft_layer: int, drafts: int, accept: float) -> float:
    """Closed form: every cycle drafts `drafts` tokens from `draft_layer`, each accepted with probability
    `accept` given the previous ones were (geometric prefix), then one verify pass with drafts + 1 rows.
    Gate cost is charged once per draft and once for the unsure token."""
    tokens = 1 + sum(accept**i for i in range(1, drafts + 1))
    k = drafts + 1
    cost = k * (draft_layer * unit.layer[1] + unit.gate)
    cost += (layers - draft_layer) * _interp(unit.layer, k) + _interp(unit.head, k)
    return tokens * unit.plain_ms(1, layers) / cost


def what_if(report: dict[str, Any]) -> str:
    """Speed-up of self-speculation for a few (draft layer, drafts, acceptance) on this CPU and 7B shape."""
    unit = measured_costs(report["costs_ms"])
    big = scaled_costs(unit, LLAMA_7B, SMOLLM2_135M)
    lines = [
        "| model, costs | draft layer / L | drafts per cycle | acceptance per draft | speed-up |",
        "|---|---|---|---|---|",
    ]
    for name, u, layers, frac in (("SmolLM2-135M, this CPU", unit, 30, 1.0), ("LLaMA-2-7B shape", big, 32, 1.0)):
        for depth in (0.2, 0.25):
            for drafts, accept in ((1, 0.6), (3, 0.6), (3, 0.8), (4, 0.9)):
                layer = round(depth * layers * frac)
                sp = speculative_speedup(u, layers, layer, drafts, accept)
                lines.append(f"| {name} | {layer} / {layers} | {drafts} | {accept} | {sp:.2f}x |")
    return "\n".join(lines)


def transfer_costs(report: dict[str, Any], base: Shape, target: Shape) -> tuple[UnitCosts, GateCosts, GateCosts]:
    """Unit costs of `target` on the CPU of a run on `base`, scaled by the parameters each call reads: ms per
    decoder-layer parameter and per head parameter as measured, the same relative cost of extra rows, and the
    per-call overhead of a gate as fitted on that run (`fit`) on top of the matrix work of `target`'s gate
    (entropy gate: its head; probe gate: a 64-unit MLP, whose weights are negligible)."""
    unit = measured_costs(report["costs_ms"])
    per_layer_param = unit.layer[1] / base.layer_params
    per_head_param = unit.head[1] / (base.vocab * base.d)
    scale = target.layer_params * per_layer_param / unit.layer[1]
    layer = {k: v * scale for k, v in unit.layer.items()}
    head = {k: v * target.vocab * target.d * per_head_param / unit.head[1] for k, v in unit.head.items()}
    overhead = max(0.0, fit(report)["gate_call_ms"] - unit.gate)
    gate_head = target.gate_classes * target.d * per_head_param
    transferred = UnitCosts(layer, head, overhead + gate_head, 0.0, overhead, gate_head)
    return transferred, GateCosts(overhead + gate_head, 0.0), GateCosts(overhead, gate_head)


def transfer_what_if(report: dict[str, Any], base: Shape, target: Shape) -> str:
    """Predicted speed-ups of `target` over its full decoding, for exit profiles a trained set of heads might
    reach: the question is which exit share and acceptance the goals need."""
    unit, entropy, probe = transfer_costs(report, base, target)
    num = target.layers
    step = unit.plain_ms(1, num)
    lines = [
        f"{target.name} costs transferred from {base.name}'s run: decoder layer {unit.layer[1]:.2f} ms (2 rows "
        f"{unit.layer[2] / unit.layer[1]:.2f}x), norm + head {unit.head[1]:.1f} ms = "
        f"{unit.head[1] / unit.layer[1]:.1f} layers ({unit.head[1] / step:.0%} of a plain step of {step:.0f} ms); "
        f"entropy gate call {entropy.call:.2f} ms, probe gate call {probe.call:.2f} ms + {probe.fired:.2f} ms "
        "for the head when it fires",
        "",
        "| mode | exit layer | exit share (first exits) | agreement / acceptance | entropy gates | probe gates |",
        "|---|---|---|---|---|---|",
    ]
    gate_layers = default_gate_layers(num)
    for layer in (gate_layers[1], gate_layers[2], gate_layers[3]):
        for share in (0.2, 0.4, 0.6):
            for accept in (0.8, 0.95):
                prof = _one_layer_profile(gate_layers, layer, share, accept)
                ee = [predict_early_exit(unit, num, g, prof) for g in (entropy, probe)]
                sp = [predict_self_speculative(unit, num, g, prof, 8) for g in (entropy, probe)]
                lines.append(f"| early exit | {layer} | {share} | {accept} | {ee[0]:.2f}x | {ee[1]:.2f}x |")
                lines.append(f"| self-speculative | {layer} | {share} | {accept} | {sp[0]:.2f}x | {sp[1]:.2f}x |")
    return "\n".join(lines)


def default_gate_layers(num: int) -> list[int]:
    return [round(k * num / 5) for k in range(1, 5)]


def _one_layer_profile(gate_layers: list[int], layer: int, share: float, accept: float) -> ExitProfile:
    """Every exit at `layer`; the gates before it are asked and never fire."""
    used = [g for g in gate_layers if g <= layer]
    return ExitProfile(used, [0.0] * (len(used) - 1) + [share], [0.0] * (len(used) - 1) + [accept])


@dataclass(frozen=True)
class ModePrediction:
    """A mode's gate layers as `best_gate_layers` chooses them, and its predicted speed-up over full decoding."""

    workload: str
    mode: str  # "early-exit" or "self-speculative"
    gate: str  # "entropy" or "probe"
    alpha: float
    layers: list[int]
    speedup: float
    exit_share: float  # first exits on the calibration text with those layers gating
    exit_agreement: float


def predict_from_calibrations(
    costs: dict[str, Any], calibs: dict[str, Any], alphas: list[float], layers: int, max_draft: int = 8
) -> list[ModePrediction]:
    """Before any decoding run: for every workload's calibration, level, gate kind and mode, the gate layers the
    cost model prices fastest at these unit costs (`costs_ms` of an earlier run on the same machine) and the
    predicted speed-up. The probe modes are left out when the heads have no probes or the run did not time a
    probe call."""
    out = []
    for workload, calib in calibs.items():
        unit = measured_costs(costs, calib.gate_dtype)
        gates = {
            "entropy": GateCosts(costs.get("gate_call_ms_cold", unit.gate), 0.0),
            "probe": GateCosts(costs.get("probe_call_ms_cold", 0.0), costs.get("gate_head_ms_cold", 0.0)),
        }
        for alpha in alphas:
            probes = bool(calib.probe_entries) and "probe_call_ms_cold" in costs
            for gate in ("entropy", "probe") if probes else ("entropy",):
                for mode in ("early-exit", "self-speculative"):
                    chosen, speed = best_gate_layers(calib, alpha, gate, mode, unit, layers, gates[gate], max_draft)
                    prof = exit_profile(calib, alpha, gate, chosen)
                    share, agree = prof.exit_share, prof.mean_agreement
                    out.append(ModePrediction(workload, mode, gate, alpha, chosen, speed, share, agree))
    return out


def predictions_markdown(rows: list[ModePrediction]) -> str:
    lines = [
        "| workload | mode | gate | alpha | gate layers | first exits (calibration) | their agreement | "
        "predicted vs full |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        layers = ", ".join(map(str, r.layers)) or "none"
        lines.append(
            f"| {r.workload} | {r.mode} | {r.gate} | {r.alpha} | {layers} | {r.exit_share:.3f} | "
            f"{r.exit_agreement:.3f} | {r.speedup:.3f} |"
        )
    return "\n".join(lines)


def predict_main(argv: list[str]) -> int:
    """llm_cost_model.py predict --costs RUN.json --calibration NAME=CAL.json ... --out PREFIX"""
    import argparse

    from beexformer.llm.calibration import Calibration

    p = argparse.ArgumentParser(prog="llm_cost_model.py predict", description=predict_from_calibrations.__doc__)
    p.add_argument("--costs", type=Path, required=True, help="a llm_decoding.py result whose costs_ms to use")
    p.add_argument("--calibration", nargs="+", required=True, help="WORKLOAD=calibration.json")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    p.add_argument("--max-draft", type=int, default=8)
    p.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    if any("=" not in c for c in args.calibration):
        p.error("--calibration takes WORKLOAD=PATH (e.g. wikitext=runs/llm/gemma3-270m/calibration.json)")
    costs_report = json.loads(args.costs.read_text())
    calibs = {name: Calibration.load(path) for name, path in (c.split("=", 1) for c in args.calibration)}
    # Runs older than the Gemma work were all SmolLM2's and did not record the depth.
    layers = costs_report.get("num_layers", SMOLLM2_135M.layers)
    rows = predict_from_calibrations(costs_report["costs_ms"], calibs, args.alphas, layers, args.max_draft)
    record = {
        "costs_from": str(args.costs),
        "calibrations": dict(c.split("=", 1) for c in args.calibration),
        "predictions": [asdict(r) for r in rows],
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    table = predictions_markdown(rows)
    args.out.with_suffix(".md").write_text(f"unit costs of {args.costs}\n\n{table}\n")
    print(table)
    return 0


def main() -> int:
    """llm_cost_model.py RUN.json [--transfer-to-gemma3-270m] | llm_cost_model.py predict ..."""
    if len(sys.argv) > 1 and sys.argv[1] == "predict":
        return predict_main(sys.argv[2:])
    report = json.loads(Path(sys.argv[1]).read_text())
    if len(sys.argv) > 2 and sys.argv[2] == "--transfer-to-gemma3-270m":
        print(transfer_what_if(report, SMOLLM2_135M, GEMMA3_270M))
        return 0
    print(to_markdown(predict(report)))
    print()
    print(fit_markdown(fit(report)))
    print()
    print(what_if(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
