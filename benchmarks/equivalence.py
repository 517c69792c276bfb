"""Check the packed runtime against the PyTorch model on a whole dev set (default: SST-2 dev, 872 sentences).

    python benchmarks/equivalence.py RUN_DIR [--packed MODEL.beex] [--data-dir GLUE] [--threads 1]

Exports RUN_DIR (its best/ model) to a temporary packed file unless --packed is given, then compares, for every
dev sentence: the logits of every exit without early exit, and for the run's own exit rule (task.json) plus the
other rules, the exit block, the prediction and the logits answered with. Prints per comparison the number of
sentences whose prediction or exit block differ and the largest |logit difference|, and, for context, the same
numbers between PyTorch float32 and PyTorch float64 (W1A1: sign() of a value within float32 rounding of zero is
decided by rounding, so even PyTorch disagrees with itself at another precision). Exit code 1 if a prediction or
exit block differs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--packed", help="packed file to check (default: export RUN_DIR to a temporary file)")
    parser.add_argument("--data-dir", default=None, help="GLUE directory (default: $GLUE_DIR)")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the summary as JSON here")
    parser.add_argument("--rules", choices=("all", "own"), default="all",
                        help="early-exit rules to compare: the run's own only, or five more")  # fmt: skip
    args = parser.parse_args()

    import torch

    from beexformer.bundle import load_model_dir, resolve_model_dir
    from beexformer.data.collate import collate
    from beexformer.data.glue import get_task, load_split
    from beexformer.engine.export import export_run
    from beexformer.exits import AbsoluteEntropy, FractionalEntropy, MaxProbability, Patience, build_exit_rule
    from beexformer.inference import PackedPredictor

    torch.set_num_threads(args.threads)
    model, encoder, info = load_model_dir(args.run_dir)
    examples = load_split(get_task(info.task), args.split, args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.packed) if args.packed else export_run(args.run_dir, Path(tmp) / "model.beex")
        predictor = PackedPredictor(path)  # batches like `beex predict`; its .packed runs one batch
        packed = predictor.packed
        size = path.stat().st_size
    ckpt = (resolve_model_dir(args.run_dir) / "model.safetensors").stat().st_size

    texts_a = [e.text_a for e in examples]
    texts_b = [e.text_b for e in examples]
    ids, segs = packed.encode(texts_a, texts_b)
    ref_batch = encoder.encode_texts(texts_a, texts_b, info.max_len)
    tokens_equal = ids == ref_batch.input_ids and segs == ref_batch.token_type_ids

    def torch_batches(batch_size: int = 128):
        order = np.argsort([len(s) for s in ids], kind="stable")
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            b = collate([{"input_ids": ids[i], "token_type_ids": segs[i]} for i in idx], encoder.pad_id)
            yield idx, (b["input_ids"], b["attention_mask"], b["token_type_ids"])

    n, c, k = len(ids), model.config.n_blocks, model.config.n_classes
    ref32 = np.zeros((c, n, k), dtype=np.float32)
    ref64 = np.zeros((c, n, k))
    model64 = load_model_dir(args.run_dir)[0].double()
    with torch.no_grad():
        for idx, batch in torch_batches():
            ref32[:, idx] = model(*batch).exit_logits.numpy()
            ref64[:, idx] = model64(*batch).exit_logits.numpy()
    out = packed.run(ids, segs).exit_logits

    def compare(a, b) -> dict:
        per = np.abs(a - b).max(axis=(0, 2)) if a.ndim == 3 else np.abs(a - b).max(axis=1)
        return {"max_abs_logit_diff": float(per.max()), "sentences_over_1e-4": int((per > 1e-4).sum()),
                "sentences_over_1e-3": int((per > 1e-3).sum())}  # fmt: skip

    report = {
        "run": str(args.run_dir), "task": info.task, "split": args.split, "sentences": n,
        "config": {key: model.config.to_dict()[key] for key in ("d_model", "n_blocks", "act_bits", "embedding_bits")},
        "tokenization_identical": bool(tokens_equal),
        "packed_bytes": size, "float32_checkpoint_bytes": ckpt, "size_ratio": round(ckpt / size, 2),
        "all_exits": {
            "packed_vs_torch32": compare(out, ref32)
            | {"prediction_mismatches": int((out.argmax(-1) != ref32.argmax(-1)).sum())},
            "torch32_vs_torch64": compare(ref32, ref64),
            "packed_vs_torch64": compare(out, ref64),
        },
        "early_exit": {},
    }  # fmt: skip
    rules = [build_exit_rule(info.exit_rule, info.exit_threshold), FractionalEntropy(0.05), FractionalEntropy(0.2),
             AbsoluteEntropy(0.3), MaxProbability(0.9), Patience(2)]  # fmt: skip
    rules = rules[:1] if args.rules == "own" else rules
    failed = not tokens_equal
    for rule in rules:
        ref_pred = np.zeros(n, dtype=np.int64)
        ref_block = np.zeros(n, dtype=np.int64)
        ref_logits = np.zeros((n, k), dtype=np.float32)
        for idx, batch in torch_batches(64):
            r = model.early_exit(*batch, rule)
            ref_pred[idx], ref_block[idx], ref_logits[idx] = r.predictions, r.exit_block, r.logits
        got = predictor.predict(texts_a, texts_b, rule=rule, batch_size=64)
        entry = compare(got.logits, ref_logits) | {
            "prediction_mismatches": int((got.predictions != ref_pred).sum()),
            "exit_block_mismatches": int((got.exit_block != ref_block).sum()),
            "mean_exit_block": float(got.exit_block.mean()),
        }
        failed |= entry["prediction_mismatches"] > 0 or entry["exit_block_mismatches"] > 0
        report["early_exit"][rule.describe()] = entry
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
