"""Check (not time) that this package's decoders reproduce Hugging Face greedy decoding on a real model: full
layer-wise decoding and self-speculative decoding, whose drafts come from exit heads initialised from the
model's own norm and head (untrained: exactness does not depend on the heads) with a loose entropy threshold,
so that drafts are both accepted and rejected. Items: the benchmark's first WikiText-2 test passages and
EVAL_PROMPTS, as llm_decoding.py builds them. Under a minute of CPU for the defaults.

    python benchmarks/llm_exactness.py --model gemma3-270m --out benchmarks/results/llm_exactness_gemma3-270m.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--test-text", default="../shared/data/wikitext-2/test.txt")
    p.add_argument("--passages", type=int, default=2)
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--entropy", type=float, default=4.0, help="threshold of the untrained heads' gate")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()

    import torch

    from beexformer.llm.adapters import adapter_for
    from beexformer.llm.gates import HeadGate
    from beexformer.llm.generation import FullDecoding, SelfSpeculativeDecoding
    from beexformer.llm.heads import ExitHeads, default_head_layers
    from beexformer.llm.loading import load_model
    from llm_decoding import workloads

    torch.set_num_threads(1)
    loaded = load_model(args.model)
    adapter, tok = adapter_for(loaded.model), loaded.tokenizer
    layers = default_head_layers(adapter.num_layers)[2:]  # the deeper heads: untrained, they agree more often
    heads = ExitHeads.create(adapter, layers, torch.arange(0, 4096), args.model)
    gate = HeadGate(heads, dict.fromkeys(layers, args.entropy))
    spec = SelfSpeculativeDecoding(adapter, gate, max_draft=4)
    items = workloads(tok, args)
    rows = []
    for wname, batch in items.items():
        for ids in batch:
            with torch.no_grad():
                out = loaded.model.generate(
                    ids[None], max_new_tokens=args.new_tokens, do_sample=False, eos_token_id=tok.eos_token_id
                )
            hf = out[0, ids.numel() :].tolist()
            full = FullDecoding(adapter).generate(ids, args.new_tokens, tok.eos_token_id)
            draft = spec.generate(ids, args.new_tokens, tok.eos_token_id)
            rows.append(
                {
                    "workload": wname,
                    "tokens": len(hf),
                    "full_equals_hf": full.tokens == hf,
                    "self_speculative_equals_hf": draft.tokens == hf,
                    "drafted": draft.drafted,
                    "accepted": draft.accepted,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    report = {"model": loaded.source, "heads": f"untrained, layers {layers}, entropy <= {args.entropy}", "items": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return 0 if all(r["full_equals_hf"] and r["self_speculative_equals_hf"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
