"""Rebuild everything the LLM decoding results need, for one model, with one command: the self-distillation
and chat calibration texts (the model's own greedy answers), the exit heads and their confidence probes, and
the gate calibrations on WikiText-2 valid and on chat text. Each step is skipped when its output exists, so
an interrupted rebuild continues where it stopped (head training itself resumes from its checkpoint).

    python benchmarks/llm_rebuild.py --model gemma3-270m --profile quick \\
        --out-dir runs/llm/gemma3-270m --manifest benchmarks/results/llm_rebuild_gemma3-270m.json

The manifest lists every command run, its duration and the sha256 of each file made; the decoding benchmark
records the sha256 of the heads file it used, so a result can be matched to the heads that produced it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Profile:
    """How much text and training: `full` is what the SmolLM2 results in docs/llm.md used (about an hour on one
    thread), `quick` fits in a few CPU-minutes, `medium` in about 20-25 minutes for Gemma-3-270M on one thread
    (nearly 3x quick's text and steps: quick's deepest head was still improving at its last step)."""

    distill_prompts: int  # TRAIN_PROMPTS answered for self-distillation (of 40)
    calib_prompts: int  # CALIB_PROMPTS answered for the chat calibration
    answer_tokens: int
    train_tokens: int  # of WikiText-2 valid
    distill_weight: float
    train_steps: int
    vocab: int
    probe_steps: int
    calib_tokens: int  # of WikiText-2 valid, after the first calib_skip tokens (never trained on)
    alphas: tuple[float, ...]
    calib_skip: int = 200_000
    seq_len: int = 256


PROFILES = {
    "full": Profile(40, 40, 128, 150_000, 4.0, 2000, 2048, 600, 16_384, (0.5, 0.7, 0.8, 0.9, 0.95)),
    "medium": Profile(20, 20, 64, 32_768, 4.0, 1200, 4096, 600, 8192, (0.8, 0.9, 0.95)),
    "quick": Profile(6, 6, 48, 12_288, 4.0, 400, 4096, 600, 4096, (0.8, 0.9, 0.95)),
    # For the end-to-end test on a tiny model: every step runs, on a few hundred tokens.
    "smoke": Profile(2, 2, 8, 1024, 4.0, 20, 32, 20, 512, (0.5, 0.9), 1024, 16),
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def run_step(cmd: list[str]) -> int:
    """Run one step in this process (`beex ...` or `python SCRIPT ...`): torch and the model code load once."""
    if cmd[0] == "beex":
        from beexformer.cli.main import main as beex

        return beex(cmd[1:])
    sys.path.insert(0, str(BENCH))
    from llm_selfdistill import main as selfdistill

    return selfdistill(cmd[2:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2, gemma3-270m or a HF name/path")
    p.add_argument("--profile", choices=sorted(PROFILES), default="full")
    p.add_argument("--out-dir", type=Path, required=True, help="where the heads, texts and calibrations go")
    p.add_argument("--wikitext", type=Path, default=Path("../shared/data/wikitext-2/valid.txt"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layers", type=int, nargs="+", default=None, help="head layers (default: train-heads' own)")
    p.add_argument("--manifest", type=Path, default=None, help="also copy the manifest here (e.g. for a commit)")
    args = p.parse_args()
    if not args.wikitext.is_file():
        p.error(f"--wikitext {args.wikitext}: no such file")
    prof = PROFILES[args.profile]
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    beex = ["beex", "llm"]
    common = ["--model", args.model, "--threads", str(args.threads)]
    distill, chat = out / "selfdistill.txt", out / "calib_chat.txt"
    heads = out / "heads.safetensors"
    calib, calib_chat = out / "calibration.json", out / "calibration_chat.json"
    alphas = [str(a) for a in prof.alphas]
    answer = ["--max-new-tokens", str(prof.answer_tokens), *common]
    selfdistill = ["python", str(BENCH / "llm_selfdistill.py"), *answer]
    train = [*beex, "train-heads", *common, "--text", str(args.wikitext), "--text", f"{distill}:{prof.distill_weight}"]
    train += ["--max-tokens", str(prof.train_tokens), "--steps", str(prof.train_steps), "--vocab", str(prof.vocab)]
    train += ["--probe-steps", str(prof.probe_steps), "--seq-len", str(prof.seq_len), "--resume", "--out", str(heads)]
    if args.layers:
        train += ["--layers", *map(str, args.layers)]
    calibrate = [*beex, "calibrate", *common, "--heads", str(heads), "--seq-len", str(prof.seq_len), "--alpha", *alphas]
    steps: list[tuple[Path, list[str]]] = [
        (distill, [*selfdistill, "--prompts", "train", "--limit", str(prof.distill_prompts), "--out", str(distill)]),
        (chat, [*selfdistill, "--prompts", "calib", "--limit", str(prof.calib_prompts), "--out", str(chat)]),
        (heads, train),
        # WikiText thresholds from tokens the heads never saw; chat thresholds from the model's own answers.
        (
            calib,
            [*calibrate, "--text", str(args.wikitext), "--skip-tokens", str(prof.calib_skip)]
            + ["--max-tokens", str(prof.calib_tokens), "--out", str(calib)],
        ),
        (calib_chat, [*calibrate, "--text", str(chat), "--out", str(calib_chat)]),
    ]
    manifest: dict[str, object] = {"model": args.model, "profile": args.profile, **asdict(prof)}
    manifest |= {"layers": args.layers, "steps": []}
    for target, cmd in steps:
        entry: dict[str, object] = {"output": str(target), "command": " ".join(cmd)}
        if target.exists():
            entry["skipped"] = "output exists"
        else:
            print(f"== {target.name}: {' '.join(cmd)}", flush=True)
            start = time.perf_counter()
            code = run_step(cmd)
            if code != 0:
                sys.exit(f"error: step {target.name} failed (exit {code}); run the same command again")
            entry["seconds"] = round(time.perf_counter() - start, 1)
        entry["sha256"] = sha256(target)
        manifest["steps"].append(entry)  # type: ignore[union-attr]
    text = json.dumps(manifest, indent=1)
    (out / "manifest.json").write_text(text)
    if args.manifest is not None:
        args.manifest.parent.mkdir(parents=True, exist_ok=True)
        args.manifest.write_text(text)
    print(f"heads {heads} sha256 {sha256(heads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
