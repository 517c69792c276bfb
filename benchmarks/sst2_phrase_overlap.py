"""How much of SST-2's training set sits inside other training phrases, against its dev set.

    python benchmarks/sst2_phrase_overlap.py --data-dir ../shared/data/glue

SST-2's training set holds the phrases of each sentence's parse tree, so a random held-out slice of it (what
`--init` selects models and thresholds on) mostly holds text that the model also trains on, inside a longer
phrase; dev holds whole unseen sentences. Writes benchmarks/results/sst2_phrase_overlap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path


def _sentences(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"), help="GLUE directory (default: $GLUE_DIR)")
    p.add_argument("--sample", type=int, default=2000, help="training phrases drawn at random")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "sst2_phrase_overlap.json"))
    args = p.parse_args(argv)
    if not args.data_dir:
        raise SystemExit("give --data-dir or set GLUE_DIR")
    train = _sentences(Path(args.data_dir) / "SST-2" / "train.tsv")
    dev = _sentences(Path(args.data_dir) / "SST-2" / "dev.tsv")
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
