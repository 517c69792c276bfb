"""How far 1-bit weights move a pretrained encoder before any training: per layer, the cosine similarity of each
token's hidden state to the float model's, with every encoder linear (or one kind of linear at a time, or the
token embeddings) replaced by alpha * sign(W) as `--init` starts training.

    python benchmarks/binarization_damage.py --data-dir ../shared/data/glue [--init minilm] [--sentences 256]

Writes benchmarks/results/binarization_damage.json and prints a table. Seconds of CPU, no training: it tells
where the pretrained function is lost, which is what training (or a teacher) has to give back.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from beexformer.data.collate import make_collate
from beexformer.data.glue import get_task, load_split
from beexformer.layers.binary_linear import BinaryLinear
from beexformer.model import BEExformer
from beexformer.pretrained import load_bert_weights, read_checkpoint
from beexformer.training.trainer import encode

FLOAT = {"weight_bits": 32, "act_bits": 32, "embedding_bits": 32, "exit_bits": 32}
LINEAR_KINDS = ("q", "k", "v", "o", "lin1", "lin2")  # attention projections, FFN up and down


@dataclass
class Damage:
    variant: str
    cosine_per_layer: list[float]  # [embeddings, block 1, ..., block C]: mean over real tokens


def build(checkpoint, binary_kinds: tuple[str, ...], embedding_bits: int) -> BEExformer:
    """The --init model with 1-bit weights only in the encoder linears whose attribute name is in binary_kinds."""
    model = BEExformer(checkpoint.model_config(2, embedding_bits=embedding_bits))
    load_bert_weights(model, checkpoint)
    for name, module in model.named_modules():
        if isinstance(module, BinaryLinear) and name.startswith("blocks."):
            module.weight_bits = 1 if name.rsplit(".", 1)[-1] in binary_kinds else 32
    return model.eval()


def hidden_states(model: BEExformer, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], output_internals=True)
    return out.hidden_states


def cosines(states: list[torch.Tensor], reference: list[torch.Tensor], mask: torch.Tensor) -> list[float]:
    real = mask.bool()
    return [F.cosine_similarity(a[real], r[real], dim=-1).mean().item() for a, r in zip(states, reference, strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, help="GLUE directory")
    p.add_argument("--init", default="minilm", help="BERT checkpoint: directory, 'minilm' or hub name")
    p.add_argument("--task", default="sst2", help="whose dev sentences are run")
    p.add_argument("--sentences", type=int, default=256)
    p.add_argument("--out", default="benchmarks/results/binarization_damage.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    checkpoint = read_checkpoint(args.init)
    encoder = checkpoint.text_encoder()
    task = get_task(args.task)
    examples = load_split(task, "dev", args.data_dir)[: args.sentences]
    dataset = encode(encoder, examples, 128, "dev", lambda m: None)
    batch = make_collate(encoder.pad_id)([dataset[i] for i in range(len(dataset))])
    reference = hidden_states(build(checkpoint, (), 32), batch)
    variants = {
        "every encoder linear 1-bit, float token embeddings": (LINEAR_KINDS, 32),
        "every encoder linear and the token embeddings 1-bit (the --init default)": (LINEAR_KINDS, 1),
        "only the token embeddings 1-bit": ((), 1),
        **{f"only the {kind} linears 1-bit": ((kind,), 32) for kind in LINEAR_KINDS},
    }
    rows = []
    for variant, (kinds, embedding_bits) in variants.items():
        rows.append(Damage(variant, cosines(hidden_states(build(checkpoint, kinds, embedding_bits), batch),
                                            reference, batch["attention_mask"])))  # fmt: skip
        print(f"{variant:75s} " + " ".join(f"{c:.3f}" for c in rows[-1].cosine_per_layer))
    result = {
        "what": "cosine similarity of token hidden states to the float checkpoint's, before any training",
        "layers": ["embeddings"] + [f"block {i + 1}" for i in range(len(reference) - 1)],
        "task": args.task,
        "n_sentences": len(examples),
        "init": args.init,
        "rows": [asdict(r) for r in rows],
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": platform.processor() or platform.machine(),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
