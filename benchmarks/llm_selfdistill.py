"""Write the model's own greedy continuations of instruction prompts to a text file: TRAIN_PROMPTS for
self-distilling exit heads, CALIB_PROMPTS for calibrating the gates of chat-style decoding.

Each sample is the chat-template prompt followed by the greedy answer; samples are separated by blank lines.
The evaluation prompts (EVAL_PROMPTS) are never used here.

    python benchmarks/llm_selfdistill.py --out benchmarks/results/llm_selfdistill.txt --max-new-tokens 128
    python benchmarks/llm_selfdistill.py --prompts calib --out benchmarks/results/llm_calib_chat.txt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_prompts import CALIB_PROMPTS, TRAIN_PROMPTS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--prompts", choices=("train", "calib"), default="train", help="which prompt list")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="answer only the first N prompts of the list")
    args = parser.parse_args(argv)

    import torch

    from beexformer.llm.loading import load_model
    from beexformer.llm.text import chat_prompt

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    samples = []
    start = time.time()
    prompts = (TRAIN_PROMPTS if args.prompts == "train" else CALIB_PROMPTS)[: args.limit]
    for i, prompt in enumerate(prompts):
        text = chat_prompt(loaded.tokenizer, prompt)
        ids = loaded.tokenizer(text, return_tensors="pt").input_ids
        with torch.no_grad():
            out = loaded.model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False)
        answer = loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=False)
        samples.append(text + answer)
        print(f"[{i + 1}/{len(prompts)}] {time.time() - start:.0f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n\n".join(samples) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
