"""Benchmark (not a test): early-exit and self-speculative decoding against plain Hugging Face greedy decoding
with the KV cache, on SmolLM2-135M-Instruct or Gemma-3-270M (`--model`), in one run with all modes interleaved
per item. Gates are entropy gates (the exit head at every gate layer) or confidence probes (`-probe` modes: the
head runs only when the probe fires).

Workloads: continuations of WikiText-2 test passages, and the 20 EVAL_PROMPTS of llm_prompts.py (chat
template). Ratios are tokens per second of a mode divided by that of `model.generate(do_sample=False)` over
the same items. Agreement of early exit is measured after the run by one teacher-forced full forward over each
output: the share of generated tokens equal to the full model's greedy token on the same prefix.

    python benchmarks/llm_decoding.py --heads runs/llm/heads.safetensors \\
        --calibration runs/llm/calibration.json --threads 1 --out benchmarks/results/llm_decoding

Also measures the costs the cost model needs (one decoder layer for k rows, the full head, a gate call, a probe
call, an exit-head run), prints each mode's speed-up over full decoding predicted from them and from the
calibration *before* the items run, and the measured one after. The report records the sha256 of the heads
and calibration files (made by benchmarks/llm_rebuild.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_prompts import EVAL_PROMPTS  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--heads", type=Path, required=True)
    p.add_argument("--calibration", type=Path, required=True, help="gate thresholds (WikiText workload)")
    p.add_argument(
        "--calibration-instruct",
        type=Path,
        default=None,
        help="gate thresholds of the instruct workload "
        "(calibrated on chat text such as llm_selfdistill.py --prompts calib; default: --calibration)",
    )
    p.add_argument("--test-text", default="../shared/data/wikitext-2/test.txt")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.9, 0.95])
    p.add_argument("--gate-layers", type=int, nargs="+", default=None, help="default: chosen from calibration")
    p.add_argument("--spec-alphas", type=float, nargs="+", default=[0.8], help="levels whose thresholds the drafts use")
    p.add_argument(
        "--adaptive-alphas",
        type=float,
        nargs="*",
        default=[0.8, 0.9],
        help="self-speculative with per-layer break-even acceptance floors from this run's costs",
    )
    p.add_argument(
        "--spec-gate-layers", type=int, nargs="+", default=None, help="extra self-speculative modes gated only here"
    )
    p.add_argument("--copy-alphas", type=float, nargs="*", default=[0.9], help="levels for the KV-copy fill")
    p.add_argument(
        "--probe-alphas", type=float, nargs="*", default=[], help="early exit gated by the confidence probes"
    )
    p.add_argument(
        "--probe-spec-alphas", type=float, nargs="*", default=[], help="self-speculative with probe-gated drafts"
    )
    p.add_argument("--max-draft", type=int, default=8)
    p.add_argument(
        "--ledger-modes",
        nargs="*",
        default=["self-speculative"],
        metavar="MODE_PREFIX",
        help="modes (name prefixes) that switch off, for the rest of a generation, a gate layer whose running "
        "balance at this run's unit costs shows it does not pay (GateLedger); none: no ledger",
    )
    p.add_argument(
        "--also-without-ledger",
        nargs="*",
        default=[],
        metavar="MODE_PREFIX",
        help="also run these ledger modes (name prefixes) without the ledger, as '... no-ledger'",
    )
    p.add_argument("--ledger-min-calls", type=int, default=8, help="calls before the ledger may switch a gate off")
    p.add_argument(
        "--ledger-margin", type=float, default=0.1, help="how far in the red (in plain steps) a gate may run"
    )
    p.add_argument("--passages", type=int, default=10)
    p.add_argument("--context", type=int, default=128, help="tokens of each WikiText passage")
    p.add_argument("--prompts", type=int, default=20)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cost-reps", type=int, default=30, help="repetitions of each unit-cost timing")
    p.add_argument(
        "--repeats", type=int, default=1, help="timed passes over all items (the report gives median, min, max)"
    )
    p.add_argument("--modes", nargs="+", default=None, help="subset of modes to run (hf always runs)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/llm_decoding"))
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: must be >= 1")
    # Fail before the model loads, not minutes later.
    for flag, path in (("--heads", args.heads), ("--calibration", args.calibration)):
        if not path.is_file():
            p.error(f"{flag} {path}: no such file (make it with beex llm train-heads / beex llm calibrate)")
    if args.calibration_instruct is not None and not args.calibration_instruct.is_file():
        p.error(f"--calibration-instruct {args.calibration_instruct}: no such file (make it with beex llm calibrate)")
    return args


def workloads(tok: Any, args: argparse.Namespace) -> dict[str, list[Any]]:
    import torch

    from beexformer.llm.text import chat_prompt, tokenize_file

    ids = tokenize_file(tok, args.test_text, max_tokens=200_000)
    step = ids.numel() // (args.passages + 1)
    wiki = [ids[i * step : i * step + args.context].clone() for i in range(1, args.passages + 1)]
    instr = [
        torch.tensor(tok(chat_prompt(tok, p), add_special_tokens=False).input_ids) for p in EVAL_PROMPTS[: args.prompts]
    ]
    # A workload with no items (--passages 0 or --prompts 0) is left out.
    return {name: items for name, items in (("wikitext", wiki), ("instruct", instr)) if items}


def measure_costs(adapter: Any, heads: Any, reps: int = 30) -> dict[str, Any]:
    """Milliseconds of one decoder layer for k rows (with a 128-token cache), the full head and a gate."""
    import torch

    from beexformer.llm.forward import position_mask
    from beexformer.llm.gates import HeadGate, ProbeGate
    from beexformer.llm.generation.engine import LayerwiseDecoder

    dec = LayerwiseDecoder(adapter)
    state, _ = dec.prefill(torch.randint(0, 1000, (128,)))
    layer = adapter.num_layers // 2
    out: dict[str, Any] = {"layer_ms": {}}

    def timed(fn: Any) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps * 1000

    rot1 = adapter.rotary_embeddings(torch.randn(1, 1, adapter.hidden_size), torch.tensor([[128]]))
    for k in (1, 2, 3, 4, 5, 8):
        pos = torch.arange(128, 128 + k)
        hidden = torch.randn(1, k, adapter.hidden_size)
        rot = adapter.rotary_embeddings(hidden, pos.view(1, -1))
        mask = position_mask(pos, torch.cat([torch.arange(128), pos]), hidden.dtype) if k > 1 else None

        def run(hidden: Any = hidden, pos: Any = pos, rot: Any = rot, mask: Any = mask) -> None:
            # With the 128-token cache, then cropped back so every repetition sees the same context.
            state.cache.add_positions(layer, pos)
            adapter.run_layer(layer, hidden, pos.view(1, -1), rot, mask, state.cache)
            state.cache.crop(127)

        out["layer_ms"][k] = timed(run)
    h1 = torch.randn(adapter.hidden_size)
    out["full_head_ms"] = timed(lambda: adapter.greedy_tokens(h1))
    out["full_head_ms_5rows"] = timed(lambda: adapter.greedy_tokens(torch.randn(5, adapter.hidden_size)))
    out["kv_ms"] = timed(lambda: adapter.project_kv(layer, torch.randn(1, 1, adapter.hidden_size), rot1))
    gate_head = heads.head(heads.layers[0])
    out["gate_ms"] = timed(lambda: torch.log_softmax(gate_head(h1), -1).max())
    out["gate_classes"] = int(gate_head.weight.shape[0])
    # In decoding, the layers run between two gates evict the gate's weights from the caches: time it cold,
    # after touching a buffer twice the size of this CPU's last-level cache, in float32 and in float16.
    evict = torch.ones(16 * 2**20)  # 64 MB

    def cold(fn: Any) -> float:
        total = 0.0
        for _ in range(reps):
            evict.sum()
            start = time.perf_counter()
            fn()
            total += time.perf_counter() - start
        return total / reps * 1000

    half_head = heads.with_weight_dtype(torch.float16).head(heads.layers[0])
    out["gate_ms_cold"] = cold(lambda: torch.log_softmax(gate_head(h1), -1).max())
    out["gate_ms_cold_float16"] = cold(lambda: torch.log_softmax(half_head(h1), -1).max())
    # Whole gate calls as the decoder makes them (Python included), cold, none of them firing: the entropy gate
    # runs its head every time; the probe gate only its probe, plus the head when it fires.
    first = heads.layers[0]
    out["gate_call_ms_cold"] = cold(lambda: HeadGate(heads, {first: -1.0})(first, h1))
    if heads.has_probes:
        probe_gate = ProbeGate(heads, {first: 1e30})
        out["probe_call_ms_cold"] = cold(lambda: probe_gate(first, h1))
        out["probe_call_ms"] = timed(lambda: probe_gate(first, h1))
        out["gate_head_ms_cold"] = cold(lambda: int(gate_head(h1).argmax()))
    return out


def predict_modes(
    strategies: dict[str, Any], calib: Any, unit: Any, gate_costs: dict[str, Any], num: int, args: Any
) -> dict[str, float]:
    """Speed-up of each gated mode over full decoding, from the unit costs measured at the start and the
    calibration's first exits at the mode's level with the mode's gate layers (see llm_cost_model.py)."""
    from llm_cost_model import exit_profile, predict_mode

    out: dict[str, float] = {}
    for name, strat in strategies.items():
        if not hasattr(strat, "gate") or "copy" in name or "adaptive" in name:
            continue
        kind = "probe" if "-probe" in name else "entropy"
        alpha = float(name.split("a=")[1].split()[0])
        prof = exit_profile(calib, alpha, kind, sorted(strat.gate.layers))
        mode = "early-exit" if name.startswith("early-exit") else "self-speculative"
        out[name] = predict_mode(mode, unit, num, gate_costs[kind], prof, args.max_draft)
    return out


def teacher_forced_agreement(adapter: Any, prompt: Any, tokens: list[int]) -> list[bool]:
    """Per generated token: equal to the full model's greedy token on the same prefix?"""
    import torch

    from beexformer.llm.forward import trace

    ids = torch.cat([prompt, torch.tensor(tokens[:-1], dtype=torch.long)])[None]
    final = trace(adapter, ids, keep=[]).layers[adapter.num_layers]
    preds = adapter.greedy_tokens(final[0, prompt.numel() - 1 :]).tolist()
    return [p == t for p, t in zip(preds, tokens, strict=True)]


def main() -> int:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from beexformer.llm.adapters import adapter_for
    from beexformer.llm.calibration import Calibration
    from beexformer.llm.gates import HeadGate, ProbeGate
    from beexformer.llm.generation import (
        EarlyExitDecoding,
        FullDecoding,
        GateBudget,
        GatePrices,
        SelfSpeculativeDecoding,
    )
    from beexformer.llm.generation.strategies import break_even_acceptance
    from beexformer.llm.heads import ExitHeads
    from beexformer.llm.loading import load_model

    loaded = load_model(args.model)
    model, tok = loaded.model, loaded.tokenizer
    adapter = adapter_for(model)
    num = adapter.num_layers
    heads = ExitHeads.load(args.heads, adapter)
    eos = tok.eos_token_id

    # Measured before the runs so that the adaptive policy uses this run's costs.
    with torch.no_grad():
        costs = measure_costs(adapter, heads, args.cost_reps)
    c1 = costs["layer_ms"][1]
    row_cost = (costs["layer_ms"][2] - c1) / c1
    head_cost = costs["full_head_ms"] / c1
    head_row_cost = (costs["full_head_ms_5rows"] - costs["full_head_ms"]) / 4 / costs["full_head_ms"]

    from llm_cost_model import GateCosts, best_gate_layers, measured_costs

    gate_costs = {
        "entropy": GateCosts(costs["gate_call_ms_cold"], 0.0),
        "probe": GateCosts(costs.get("probe_call_ms_cold", 0.0), costs.get("gate_head_ms_cold", 0.0)),
    }

    def budgets(unit: Any) -> dict[str, Any]:
        """The gate ledger's budget per gate kind, priced at this run's unit costs."""
        extra_head_row = (unit.head[5] - unit.head[1]) / 4
        return {
            kind: GateBudget(
                GatePrices(unit.layer[1], unit.layer[2] - unit.layer[1], unit.head[1], extra_head_row, g.call, g.fired),
                args.ledger_min_calls,
                args.ledger_margin,
            )
            for kind, g in gate_costs.items()
        }

    def build_strategies(calib: Any) -> tuple[dict[str, Any], dict[str, dict[int, float]]]:
        """Every mode, with gates from one calibration (the modes of both workloads share names)."""

        gating = calib.gate_heads(heads)  # the precision the thresholds were set with
        unit = measured_costs(costs, calib.gate_dtype)
        budget = budgets(unit)

        def thresholds(alpha: float, kind: str, mode: str) -> dict[int, float]:
            """--gate-layers, or else the layers the cost model prices fastest for this mode, from this run's
            costs and the calibration's first exits (never from the evaluation items)."""
            layers = args.gate_layers
            if layers is None:
                layers, _ = best_gate_layers(calib, alpha, kind, mode, unit, num, gate_costs[kind], args.max_draft)
            return {k: v for k, v in calib.thresholds_for(alpha, kind).items() if k in layers}

        def gate_for(alpha: float, mode: str = "early-exit") -> HeadGate:
            return HeadGate(gating, thresholds(alpha, "entropy", mode))

        def probe_gate_for(alpha: float, mode: str = "early-exit") -> ProbeGate:
            return ProbeGate(gating, thresholds(alpha, "probe", mode))

        spec = "self-speculative"
        # (name, class, gate, gate kind, options): every gated mode
        gated: list[tuple[str, Any, Any, str, dict[str, Any]]] = []
        draft = {"max_draft": args.max_draft}
        for alpha in args.alphas:
            gated.append((f"early-exit a={alpha}", EarlyExitDecoding, gate_for(alpha), "entropy", {}))
        for alpha in args.copy_alphas:
            gated.append(
                (f"early-exit-copy a={alpha}", EarlyExitDecoding, gate_for(alpha), "entropy", {"kv_fill": "copy"})
            )
        for alpha in args.spec_alphas:
            gated.append(
                (f"self-speculative a={alpha}", SelfSpeculativeDecoding, gate_for(alpha, spec), "entropy", draft)
            )
        for alpha in args.probe_alphas:
            gated.append((f"early-exit-probe a={alpha}", EarlyExitDecoding, probe_gate_for(alpha), "probe", {}))
        for alpha in args.probe_spec_alphas:
            gate = probe_gate_for(alpha, spec)
            gated.append((f"self-speculative-probe a={alpha}", SelfSpeculativeDecoding, gate, "probe", draft))
        if args.spec_gate_layers:
            only = set(args.spec_gate_layers)
            for alpha in args.spec_alphas:
                thr = {k: v for k, v in calib.thresholds_for(alpha).items() if k in only}
                label = ",".join(str(x) for x in sorted(only))
                name = f"self-speculative a={alpha} gates={label}"
                gated.append((name, SelfSpeculativeDecoding, HeadGate(gating, thr), "entropy", draft))
        floors_by_alpha: dict[str, dict[int, float]] = {}
        for alpha in args.adaptive_alphas:
            gate = gate_for(alpha, spec)
            floors = {
                layer: break_even_acceptance(layer, num, row_cost, head_cost, head_row_cost) for layer in gate.layers
            }
            floors_by_alpha[str(alpha)] = floors
            options = {**draft, "min_acceptance": floors}
            gated.append((f"self-speculative-adaptive a={alpha}", SelfSpeculativeDecoding, gate, "entropy", options))
        strategies: dict[str, Any] = {"full": FullDecoding(adapter)}
        for name, cls, gate, kind, options in gated:
            ledgered = any(name.startswith(m) for m in args.ledger_modes)
            strategies[name] = cls(adapter, gate, **options, budget=budget[kind] if ledgered else None)
            if ledgered and any(name.startswith(m) for m in args.also_without_ledger):
                strategies[f"{name} no-ledger"] = cls(adapter, gate, **options)
        if args.modes:
            strategies = {k: v for k, v in strategies.items() if any(k.startswith(m) for m in args.modes)}
        return strategies, floors_by_alpha

    # Each workload's gates come from text like it: WikiText valid for WikiText passages, the model's own
    # answers to CALIB_PROMPTS for the chat prompts (when given); never from the evaluation items.
    calib_paths = {"wikitext": args.calibration, "instruct": args.calibration_instruct or args.calibration}
    calibs = {w: Calibration.load(path) for w, path in calib_paths.items()}
    per_workload = {w: build_strategies(c) for w, c in calibs.items()}
    alphas = sorted({*args.alphas, *args.spec_alphas, *args.copy_alphas, *args.adaptive_alphas})

    def run_hf(ids: Any) -> tuple[list[int], float]:
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids[None], max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=eos)
        return out[0, ids.numel() :].tolist(), time.perf_counter() - start

    from llm_rebuild import sha256

    predicted = {
        w: predict_modes(strats, calibs[w], measured_costs(costs, calibs[w].gate_dtype), gate_costs, num, args)
        for w, (strats, _) in per_workload.items()
    }
    report: dict[str, Any] = {
        "model": loaded.source,
        "num_layers": num,
        "heads": str(args.heads),
        "heads_sha256": sha256(args.heads),
        "calibration_sha256": {w: sha256(path) for w, path in calib_paths.items()},
        "predicted_before_run": predicted,
        "threads": args.threads,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "calibration": {w: str(path) for w, path in calib_paths.items()},
        "gate_dtype": {w: c.gate_dtype for w, c in calibs.items()},
        "gate_layers": {
            w: {k: sorted(v.gate.layers) for k, v in strats.items() if hasattr(v, "gate")}
            for w, (strats, _) in per_workload.items()
        },
        "thresholds": {w: {a: c.thresholds_for(a) for a in alphas} for w, c in calibs.items()},
        "adaptive_acceptance_floors": {w: floors for w, (_, floors) in per_workload.items()},
        "ledger": {"modes": args.ledger_modes, "min_calls": args.ledger_min_calls, "margin": args.ledger_margin},
        "workloads": {},
    }
    print(f"model: {loaded.source}; torch threads: {args.threads}; gates: {report['gate_layers']}", flush=True)
    print(f"heads sha256 {report['heads_sha256']}; costs (ms): {json.dumps(costs)}", flush=True)
    print("predicted speed-up over full decoding, before the run: " + json.dumps(predicted), flush=True)
    all_items = workloads(tok, args)
    # Warm-up (allocator, first-call overheads) on one item, not timed.
    warm = next(iter(all_items.values()))[0]
    run_hf(warm)
    for strats, _ in per_workload.values():
        for strat in strats.values():
            strat.generate(warm, 4, eos)
    repeats = []
    for rep in range(args.repeats):
        # Every repeat times HF greedy and every mode on every item, interleaved, so drift hits all alike.
        repeats.append(
            {
                w: run_workload(w, items, per_workload[w][0], run_hf, eos, adapter, args, rep)
                for w, items in all_items.items()
            }
        )
    report["workloads"] = combine_repeats(repeats)
    for wname, rows in report["workloads"].items():
        for name, row in rows.items():
            if name in predicted[wname]:
                row["predicted_vs_full"] = predicted[wname][name]
    report["costs_ms"] = costs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    from llm_cost_model import predict
    from llm_cost_model import to_markdown as cost_markdown

    report["cost_model"] = predict(report)
    table = to_markdown(report) + "\n\n" + cost_markdown(report["cost_model"])
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


def run_workload(
    wname: str, items: list[Any], strategies: dict[str, Any], run_hf: Any, eos: Any, adapter: Any, args: Any, rep: int
) -> dict[str, Any]:
    """One timed pass over a workload's items: HF greedy and every mode on each item, in an order rotated per
    item so no mode always runs first; then the summary rows (ratios over HF greedy of this pass)."""
    from beexformer.llm.generation import DraftStatistics

    names = ["hf", *strategies]
    # One DraftStatistics per self-speculative mode and pass: the adaptive floors learn over all the workload's
    # items (the other modes only record per-layer acceptance in it).
    draft_stats = {n: DraftStatistics() for n in strategies if n.startswith("self-speculative")}
    acc: dict[str, dict[str, Any]] = {n: {"tokens": 0, "seconds": 0.0, "results": []} for n in names}
    for i, ids in enumerate(items):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            if name == "hf":
                tokens, secs = run_hf(ids)
                acc[name]["results"].append(tokens)
            else:
                options = {"stats": draft_stats[name]} if name in draft_stats else {}
                res = strategies[name].generate(ids, args.new_tokens, eos, **options)
                tokens, secs = res.tokens, res.seconds
                acc[name]["results"].append(res)
            acc[name]["tokens"] += len(tokens)
            acc[name]["seconds"] += secs
        print(f"run {rep + 1}/{args.repeats} {wname} {i + 1}/{len(items)}", flush=True)
    rows = summarize(acc, items, adapter, adapter.num_layers, teacher_forced_agreement)
    for name, st in draft_stats.items():
        rows[name]["layer_acceptance"] = {
            layer: {"drafted": st.tried[layer], "acceptance": st.acceptance(layer)} for layer in sorted(st.tried)
        }
    return rows


@dataclass(frozen=True)
class Spread:
    """One quantity over the repeats of a run."""

    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def as_dict(self, key: str) -> dict[str, Any]:
        return {key: self.median, f"{key}_min": min(self.runs), f"{key}_max": max(self.runs), f"{key}_runs": self.runs}


def combine_repeats(repeats: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per workload and mode: the first repeat's row (its decisions: agreement, exits, acceptance; the same in
    every repeat, the decoders being deterministic) with the ratio over HF greedy, tokens/s and the ratio over
    this package's full decoding replaced by their median over the repeats, plus min, max and every value.
    Identical-output counts are the smallest of any repeat."""
    combined: dict[str, dict[str, Any]] = {}
    for wname, first in repeats[0].items():
        rows: dict[str, Any] = {}
        for name, row in first.items():
            runs = [rep[wname][name] for rep in repeats]
            out = {**row, **Spread(tuple(r["ratio"] for r in runs)).as_dict("ratio")}
            out["tokens_per_s"] = Spread(tuple(r["tokens_per_s"] for r in runs)).median
            if "full" in first:
                vs_full = tuple(r["ratio"] / rep[wname]["full"]["ratio"] for r, rep in zip(runs, repeats, strict=True))
                out |= Spread(vs_full).as_dict("vs_full")
            if "items" in row:
                out["identical_to_hf_greedy"] = min(r["identical_to_hf_greedy"] for r in runs)
            rows[name] = out
        combined[wname] = rows
    return combined


def summarize(acc: dict[str, Any], items: list[Any], adapter: Any, num: int, agreement_fn: Any) -> dict[str, Any]:
    import torch

    base_tps = acc["hf"]["tokens"] / acc["hf"]["seconds"]
    hf_tokens = acc["hf"]["results"]
    rows: dict[str, Any] = {"hf": {"tokens_per_s": base_tps, "ratio": 1.0, "tokens": acc["hf"]["tokens"]}}
    for name, a in acc.items():
        if name == "hf":
            continue
        results = a["results"]
        tps = a["tokens"] / a["seconds"]
        depths = [d for r in results for d in r.exit_depths]
        row: dict[str, Any] = {
            "tokens_per_s": tps,
            "ratio": tps / base_tps,
            "tokens": a["tokens"],
            "identical_to_hf_greedy": sum(r.tokens == h for r, h in zip(results, hf_tokens, strict=True)),
            "items": len(results),
            "mean_exit_layer": sum(depths) / len(depths),
            "layers_skipped_at_exit": sum(num - d for d in depths) / len(depths),
            "exit_share": sum(d < num for d in depths) / len(depths),
        }
        off = [layer for r in results for layer in r.switched_off]
        if off:  # gate layer -> in how many items the ledger switched it off
            row["switched_off"] = {layer: off.count(layer) for layer in sorted(set(off))}
        work: dict[str, Any] = {"layer_calls": {}, "head_calls": {}, "gate_calls": 0, "kv_projections": 0}
        for r in results:
            for key in ("layer_calls", "head_calls"):
                for k, n in getattr(r, key).items():
                    work[key][k] = work[key].get(k, 0) + n
            work["gate_calls"] += r.gate_calls
            work["gate_head_runs"] = work.get("gate_head_runs", 0) + r.gate_head_runs
            work["kv_projections"] += r.kv_projections
        work["gate_kind"] = "probe" if "-probe" in name else "entropy"
        # Tokens produced by decode steps (the first token of each item comes from the prefill).
        work["decode_tokens"] = a["tokens"] - len(results)
        work["head_calls"][1] = work["head_calls"].get(1, 0) - len(results)
        row["work"] = work
        if name.startswith("early-exit"):
            with torch.no_grad():
                agree = [agreement_fn(adapter, ids, r.tokens) for ids, r in zip(items, results, strict=True)]
            flat = [x for a_ in agree for x in a_]
            exited = [
                x
                for a_, r in zip(agree, results, strict=True)
                for x, d in zip(a_, r.exit_depths, strict=True)
                if d < num
            ]
            row["agreement"] = sum(flat) / len(flat)
            row["agreement_exited"] = sum(exited) / len(exited) if exited else None
        if name.startswith("self-speculative"):
            drafted = sum(r.drafted for r in results)
            lengths = [n for r in results for n in r.draft_lengths]
            row["acceptance_rate"] = sum(r.accepted for r in results) / drafted if drafted else 0.0
            row["drafted"] = drafted
            row["mean_draft_length"] = sum(lengths) / len(lengths) if lengths else 0.0
            row["draft_length_hist"] = {n: lengths.count(n) for n in sorted(set(lengths))}
            row["full_passes_per_token"] = sum(r.full_passes for r in results) / a["tokens"]
        rows[name] = row
    return rows


def _spread(row: dict[str, Any], key: str) -> str:
    """'median [min-max]' over the repeats, or the one value of a single run."""
    if len(row.get(f"{key}_runs", ())) > 1:
        return f"{row[key]:.3f} [{row[f'{key}_min']:.3f}-{row[f'{key}_max']:.3f}]"
    return f"{row[key]:.3f}"


def to_markdown(report: dict[str, Any]) -> str:
    num = report.get("num_layers", 30)
    lines = [
        f"model: {report['model']}; torch threads: {report['threads']}; up to {report['new_tokens']} new tokens "
        f"per item; {report.get('repeats', 1)} timed run(s); gate layers per mode: {report['gate_layers']}",
        "",
        "| workload | mode | tok/s | ratio vs HF greedy (median [min-max]) | identical to greedy | "
        "agreement (all / exited) | mean exit layer | layers skipped | exit share | acceptance | mean draft |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for wname, rows in report["workloads"].items():
        for name, r in rows.items():
            agree = ""
            if "agreement" in r:
                ex = r["agreement_exited"]
                agree = f"{r['agreement']:.3f} / {ex:.3f}" if ex is not None else f"{r['agreement']:.3f} / -"
            ident = f"{r['identical_to_hf_greedy']}/{r['items']}" if "items" in r else ""
            acc_txt = f"{r['acceptance_rate']:.3f}" if "acceptance_rate" in r else ""
            lines.append(
                f"| {wname} | {name} | {r['tokens_per_s']:.2f} | {_spread(r, 'ratio')} | {ident} | {agree} | "
                f"{r.get('mean_exit_layer', num):.2f} | {r.get('layers_skipped_at_exit', 0):.2f} | "
                f"{r.get('exit_share', 0):.3f} | {acc_txt} | "
                f"{round(r['mean_draft_length'], 2) if 'mean_draft_length' in r else ''} |"
            )
    lines += [
        "",
        "| workload | mode | predicted vs full (before the run) | measured vs full (median [min-max]) | "
        "measured vs HF greedy |",
        "|---|---|---|---|---|",
    ]
    for wname, rows in report["workloads"].items():
        full_ratio = rows["full"]["ratio"] if "full" in rows else float("nan")
        for name, r in rows.items():
            if "predicted_vs_full" in r:
                vs_full = _spread(r, "vs_full") if "vs_full" in r else f"{r['ratio'] / full_ratio:.3f}"
                lines.append(f"| {wname} | {name} | {r['predicted_vs_full']:.3f} | {vs_full} | {_spread(r, 'ratio')} |")
    per_layer = [
        f"{wname} {name}: "
        + ", ".join(f"L{layer} {v['acceptance']:.2f} of {v['drafted']}" for layer, v in r["layer_acceptance"].items())
        for wname, rows in report["workloads"].items()
        for name, r in rows.items()
        if r.get("layer_acceptance")
    ]
    if per_layer:
        lines += ["", "acceptance per draft layer (of drafts): " + "; ".join(per_layer)]
    ledger = report.get("ledger")
    if ledger:
        off = [
            f"{wname} {name}: " + ", ".join(f"L{layer} in {n}" for layer, n in r["switched_off"].items())
            for wname, rows in report["workloads"].items()
            for name, r in rows.items()
            if r.get("switched_off")
        ]
        lines += [
            "",
            f"gate ledger in {', '.join(ledger.get('modes', [])) or 'no'} modes (min {ledger['min_calls']} calls, "
            f"margin {ledger['margin']} of a plain step); gate layers "
            "it switched off (in how many items of the first run): " + ("; ".join(off) or "none"),
        ]
    c = report.get("costs_ms", {})
    if c:
        lines += [
            "",
            "costs (ms, one thread, same run): decoder layer for k rows "
            + ", ".join(f"k={k}: {v:.3f}" for k, v in c["layer_ms"].items())
            + f"; full norm+head {c['full_head_ms']:.3f} (5 rows {c['full_head_ms_5rows']:.3f}); "
            f"pruned gate ({c['gate_classes']} classes) {c['gate_ms']:.3f} with its weights in cache, "
            f"{c.get('gate_ms_cold', float('nan')):.3f} cold (float16 weights: "
            f"{c.get('gate_ms_cold_float16', float('nan')):.3f}); whole gate call, cold: entropy gate "
            f"{c.get('gate_call_ms_cold', float('nan')):.3f}, probe gate not firing "
            f"{c.get('probe_call_ms_cold', float('nan')):.3f} ({c.get('probe_call_ms', float('nan')):.3f} warm), "
            f"exit head after a probe fires {c.get('gate_head_ms_cold', float('nan')):.3f}; one decoder layer "
            f"{c['layer_ms'][1]:.3f}",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    from beexformer.errors import BeexError

    try:
        sys.exit(main())
    except BeexError as err:  # a corrupt heads or calibration file, a bad option value: one line, no traceback
        sys.exit(f"error: {err}")
