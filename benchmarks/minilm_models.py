"""Binarized all-MiniLM-L6-v2 models for the speed benchmark, built in minutes instead of trained for hours.

    python benchmarks/minilm_models.py --out-dir /tmp/beex-minilm [--calib 2000] [--data-dir GLUE]

Writes model directories (the trainer's layout, so `beex export`, `beex eval` and benchmarks/equivalence.py
take them) under OUT: `float` (MiniLM as it is: float weights and embeddings) and `w1a1`, `w1a2`, `w1a4`,
`w1a32` (1-bit weights and token table, activations of that width: mean-sign at 1 bit, LSQ at 2 and 4).

What they are, honestly: the body is the pretrained MiniLM with its weights binarized *without any training*
(`beex train --init minilm` at step 0); each width's LSQ steps are set by their own rule from the first batch
of SST-2 training sentences. Only the exit heads are fitted: for each block, an MLP of the exit's shape
(d -> exit_hidden -> ReLU -> 1 logit, scikit-learn, seed 0) on the mean-pooled block output of the first
--calib SST-2 training sentences, copied into the exit (class-0 logit 0, class-1 logit the MLP's). Speed
does not depend on training; accuracy does, so the dev metric the benchmark prints beside each row is that of
these untrained-body models, far from what `beex train --init minilm` reaches. The dev set is never used here.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WIDTHS = {"w1a1": 1, "w1a2": 2, "w1a4": 4, "w1a32": 32}
MAX_LEN = 128


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--calib", type=int, default=2000, help="SST-2 training sentences for steps and heads")
    parser.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", str(HERE.parent.parent / "shared/data/glue")))
    parser.add_argument("--variants", default="float,w1a1,w1a2,w1a4,w1a32")
    return parser.parse_args()


def train_sentences(data_dir: str, n: int) -> tuple[list[str], np.ndarray]:
    from beexformer.data.glue import get_task, load_split

    examples = load_split(get_task("sst2"), "train", data_dir)[:n]
    return [e.text_a for e in examples], np.array([int(e.label) for e in examples])


def pooled_states(model, encoder, texts: list[str], batch: int = 64) -> list[np.ndarray]:
    """Per block, the masked mean of its output over each sentence's tokens: [n_blocks] x [N, d]."""
    import torch

    from beexformer.data.collate import pad_sequences
    from beexformer.layers.exit_head import masked_mean_pool

    out: list[list[np.ndarray]] = [[] for _ in range(model.config.n_blocks)]
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            enc = encoder.encode_texts(texts[start : start + batch], None, MAX_LEN)
            ids, mask, segs = pad_sequences(enc.input_ids, enc.token_type_ids)
            states = model.hidden_states(ids, mask, segs)[1:]
            for c, h in enumerate(states):
                out[c].append(masked_mean_pool(h, mask).numpy())
    return [np.concatenate(parts) for parts in out]


def fit_exits(model, features: list[np.ndarray], labels: np.ndarray) -> list[float]:
    """Fit each exit as a one-logit MLP of its own shape; returns the training accuracy per exit."""
    import torch
    from sklearn.neural_network import MLPClassifier

    accuracies = []
    for head, x in zip(model.exits, features, strict=True):
        mlp = MLPClassifier(hidden_layer_sizes=(head.fc1.out_features,), max_iter=300, random_state=0)
        mlp.fit(x, labels)
        accuracies.append(float(mlp.score(x, labels)))
        with torch.no_grad():
            head.fc1.weight.copy_(torch.from_numpy(mlp.coefs_[0].T.astype(np.float32)))
            head.fc1.bias.copy_(torch.from_numpy(mlp.intercepts_[0].astype(np.float32)))
            w2 = np.zeros((2, mlp.coefs_[1].shape[0]), dtype=np.float32)
            w2[1] = mlp.coefs_[1][:, 0]
            head.fc2.weight.copy_(torch.from_numpy(w2))
            head.fc2.bias.copy_(torch.tensor([0.0, float(mlp.intercepts_[1][0])]))
    return accuracies


def build(name: str, texts: list[str], labels: np.ndarray, out_dir: Path) -> dict:
    import torch

    from beexformer.bundle import TaskInfo, save_model_dir
    from beexformer.pretrained import pretrained_model, read_checkpoint

    torch.manual_seed(0)
    if name == "float":
        bits = dict(weight_bits=32, act_bits=32, embedding_bits=32)
    else:
        bits = dict(weight_bits=1, act_bits=WIDTHS[name], embedding_bits=1)
    model, encoder = pretrained_model(read_checkpoint("minilm"), 2, **bits)
    model.eval()
    pooled_states(model, encoder, texts[:64])  # the first batch sets the LSQ steps (their own rule)
    accuracies = fit_exits(model, pooled_states(model, encoder, texts), labels)
    info = TaskInfo(task="sst2", label_list=["0", "1"], max_len=MAX_LEN, exit_rule="fractional_entropy",
                    exit_threshold=0.05)  # fmt: skip
    save_model_dir(out_dir / name, model, encoder, info)
    return {"bits": bits, "exit_train_accuracy": accuracies}


def main() -> None:
    args = parse_args()
    out_dir = Path(args.out_dir)
    texts, labels = train_sentences(args.data_dir, args.calib)
    manifest = {"calib_sentences": len(texts), "body": "all-MiniLM-L6-v2, binarized without training", "models": {}}
    for name in args.variants.split(","):
        manifest["models"][name] = build(name, texts, labels, out_dir)
        print(name, manifest["models"][name], flush=True)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
