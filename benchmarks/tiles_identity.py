"""The AMX tile path against the popcount kernels on a whole dev set: bit-identical outputs, sentence by sentence.

    python benchmarks/tiles_identity.py w1a2.beex w1a4.beex [--out benchmarks/results/tiles_identity.json]

Each packed file is loaded twice, with `tiles=False` (the bit-serial popcount kernels) and `tiles=True` (engine/
amx.py), and both answer every SST-2 dev sentence: one at a time without exit (all exits' logits compared with
np.array_equal) and in batches of 32 with the fractional-entropy rule (delta 0.05; logits and exit blocks).
Counts the sentences whose outputs differ in any bit. Needs a CPU and kernel with AMX (exits otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def compare(path: str, texts: list[str]) -> dict:
    from beexformer.engine.runtime import PackedModel
    from beexformer.exits import FractionalEntropy

    plain, tiled = PackedModel.load(path, tiles=False), PackedModel.load(path, tiles=True)
    ids, segs = plain.encode(texts)
    no_exit = sum(
        not np.array_equal(plain.run([ids[i]], [segs[i]]).exit_logits, tiled.run([ids[i]], [segs[i]]).exit_logits)
        for i in range(len(ids))
    )
    rule, early = FractionalEntropy(0.05), 0
    for s in range(0, len(ids), 32):
        a, b = plain.run(ids[s : s + 32], segs[s : s + 32], rule), tiled.run(ids[s : s + 32], segs[s : s + 32], rule)
        same = (a.logits == b.logits).all(axis=1) & (a.exit_block == b.exit_block)
        early += int((~same).sum())
    return {"sentences": len(ids), "differ_no_exit_batch1": int(no_exit), "differ_early_exit_batch32": early}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+")
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", str(HERE.parent.parent / "shared/data/glue")))
    p.add_argument("--out", default=str(HERE / "results" / "tiles_identity.json"))
    args = p.parse_args()
    from beexformer.data.glue import get_task, load_split
    from beexformer.engine import amx

    if not amx.usable():
        raise SystemExit("no AMX tiles on this CPU / kernel: nothing to compare")
    texts = [e.text_a for e in load_split(get_task("sst2"), "dev", args.data_dir)]
    report = {
        "command": "python benchmarks/tiles_identity.py " + " ".join(sys.argv[1:]),
        "models": {Path(m).name: compare(m, texts) for m in args.models},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
