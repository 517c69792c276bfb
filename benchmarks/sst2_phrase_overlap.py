"""How much of SST-2's training set sits inside other training phrases, against its dev set.

    python benchmarks/sst2_phrase_overlap.py --data-dir ../shared/data/glue

SST-2's training set holds the phrases of each sentence's parse tree, so a random held-out slice of it (what
`--init` selects models and thresholds on) mostly holds text that the model also trains on, inside a longer
phrase; dev holds whole unseen sentences. Writes benchmarks/results/sst2_phrase_overlap.json.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from beexformer.data.glue import load_split
from beexformer.errors import BeexError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="GLUE directory (default: $GLUE_DIR)")
    p.add_argument("--sample", type=int, default=2000, help="training phrases drawn at random")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sst2_phrase_overlap.json"))
    args = p.parse_args(argv)
    try:
        train, dev = ([ex.text_a for ex in load_split("sst2", split, args.data_dir)] for split in ("train", "dev"))
    except BeexError as err:  # no data directory, a missing or malformed file: one line
        raise SystemExit(str(err)) from None
    if not 0 < args.sample <= len(train):
        raise SystemExit(f"--sample must lie in 1..{len(train)} (the training phrases), got {args.sample}")
    corpus = "\n".join(train)  # one string: `count` finds a phrase inside any longer phrase too
    sample = random.Random(0).sample(train, args.sample)
    # A drawn phrase occurs once as itself; a second occurrence is another training phrase that contains it.
    train_inside = sum(corpus.count(text) >= 2 for text in sample) / len(sample)
    dev_inside = sum(corpus.count(text) >= 1 for text in dev) / len(dev)
    result = {
        "command": "python benchmarks/sst2_phrase_overlap.py --data-dir DATA",
        "train_phrases": len(train),
        "sampled": len(sample),
        "train_phrase_inside_another_train_phrase": train_inside,
        "dev_sentence_inside_a_train_phrase": dev_inside,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
