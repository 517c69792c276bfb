"""The trained WordPiece numbers its pieces the same way in every process. The Rust trainer picks the same
pieces each run on real text but numbers them in hash-map order, so runs with the same seed would
otherwise not reproduce. (On artificial text full of exact frequency ties, the pieces at the vocabulary
cut-off can still differ between runs: a limitation of the trainer, documented in docs/training.md.)"""

import subprocess
import sys

SCRIPT = """
import sys
from beexformer.data.glue import get_task, iter_texts, load_split
from beexformer.data.tokenizer import TextEncoder
examples = load_split(get_task("sst2"), "train", sys.argv[1])[:3000]
enc = TextEncoder.train_wordpiece(iter_texts(examples), vocab_size=500)
print(sorted(enc.tokenizer.get_vocab().items(), key=lambda kv: kv[1]))
"""


def test_trained_vocabulary_is_identical_across_processes(glue_dir):
    cmd = [sys.executable, "-c", SCRIPT, str(glue_dir)]
    runs = {subprocess.run(cmd, capture_output=True, text=True, check=True).stdout for _ in range(3)}
    assert len(runs) == 1
    vocab = eval(runs.pop())  # our own output
    assert [t for t, _ in vocab[:5]] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert [i for _, i in vocab] == list(range(len(vocab)))
