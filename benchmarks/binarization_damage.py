"""How far 1-bit weights and k-bit activations move a pretrained encoder before any training: per layer, the
cosine similarity of each token's hidden state to the float model's, with every encoder linear (or one kind of
linear at a time, or the token embeddings) replaced by alpha * sign(W) as `--init` starts training; and, with
float weights, with the inputs of every linear (or one kind) quantized to 4, 2 or 1 bits by the learned
quantizers at their initial step (`beexformer.quantizers`: LSQ's rule from the first batch). Beside them, how
far the inputs of each kind of linear reach beyond their mean magnitude: the outliers a per-tensor step has to
either clip or spend its levels on.

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
from beexformer.quantizers import ActivationQuantizer, zero_point
from beexformer.training.trainer import encode

LINEAR_KINDS = ("q", "k", "v", "o", "lin1", "lin2")  # attention projections, FFN up and down


@dataclass
class Damage:
    variant: str
    cosine_per_layer: list[float]  # [embeddings, block 1, ..., block C]: mean over real tokens


@dataclass
class InputRange:
    kind: str  # which linear's input (q, k and v share one)
    mean_abs: float  # mean |x| over real tokens and channels, averaged over blocks
    max_over_mean: float  # max |x| / mean |x|, the largest over blocks
    share_beyond_6_mean: float  # share of entries with |x| > 6 mean |x|, averaged over blocks
    # Where the linear quantizes its input: the top level (2^k - 1 - z) * s over mean |x| and the share of
    # inputs beyond it (clipped), both averaged over blocks.
    top_over_mean: float | None = None
    share_clipped: float | None = None


def build(
    checkpoint,
    binary_kinds: tuple[str, ...],
    embedding_bits: int,
    act_bits: int = 32,
    act_kinds: tuple[str, ...] = (),
    outliers: int = 0,
    gelu_floor: bool = False,
) -> BEExformer:
    """The --init model with 1-bit weights only in the encoder linears whose attribute name is in binary_kinds,
    and `act_bits`-bit inputs (elastic sign at one bit) only in those whose name is in act_kinds, each keeping
    its `outliers` largest input channels at full precision, lin2's levels from GELU's minimum if `gelu_floor`."""
    config = checkpoint.model_config(
        2,
        embedding_bits=embedding_bits,
        act_bits=act_bits,
        act_binarizer="elastic",
        act_outliers=outliers,
        act_gelu_floor=gelu_floor,
    )
    model = BEExformer(config)
    load_bert_weights(model, checkpoint)
    for name, module in model.named_modules():
        if isinstance(module, BinaryLinear):
            kind = name.rsplit(".", 1)[-1] if name.startswith("blocks.") else None
            module.weight_bits = 1 if kind in binary_kinds else 32
            if kind not in act_kinds:
                module.input_quantizer = torch.nn.Identity()
    return model.eval()


def top_level(module: BinaryLinear) -> float | None:
    """The largest level (2^k - 1 - z) * s + m of the module's learned input quantizer (m its floor, 0 unless
    act_gelu_floor); None if it has none."""
    quantizer = module.input_quantizer
    if not isinstance(quantizer, ActivationQuantizer):
        return None
    levels_above = 2**quantizer.bits - 1 - zero_point(quantizer.bits, quantizer.signed)
    return float(quantizer.step.detach()) * levels_above + quantizer.floor


def input_ranges(model: BEExformer, batch: dict[str, torch.Tensor]) -> list[InputRange]:
    """Per kind of encoder linear, how far its inputs (before any quantizer) reach beyond their mean magnitude,
    and beyond the top level of its quantizer where it has a learned one."""
    real = batch["attention_mask"].bool()
    seen: dict[str, list[tuple[float, ...]]] = {kind: [] for kind in LINEAR_KINDS}

    def record(kind: str, top: float | None):
        def hook(_module, inputs, _output) -> None:
            magnitude = inputs[0][real].abs()
            mean = magnitude.mean().item()
            row = [mean, magnitude.max().item() / mean, (magnitude > 6 * mean).float().mean().item()]
            if top is not None:
                row += [top / mean, (magnitude > top).float().mean().item()]
            seen[kind].append(tuple(row))

        return hook

    handles = [
        module.register_forward_hook(record(name.rsplit(".", 1)[-1], top_level(module)))
        for name, module in model.named_modules()
        if isinstance(module, BinaryLinear) and name.startswith("blocks.")
    ]
    hidden_states(model, batch)
    for handle in handles:
        handle.remove()
    ranges = []
    for kind, rows in seen.items():
        mean, ratio, beyond, *clipping = zip(*rows, strict=True)  # one tuple per statistic, one entry per block
        averages = [sum(column) / len(column) for column in (mean, beyond, *clipping)]
        ranges.append(InputRange(kind, averages[0], max(ratio), *averages[1:]))
    return ranges


def describe(ranges: list[InputRange]) -> None:
    for r in ranges:
        clipped = "" if r.top_over_mean is None else f"; top level {r.top_over_mean:.1f}x the mean, "
        clipped += "" if r.share_clipped is None else f"{100 * r.share_clipped:.2f} % clipped"
        print(f"  {r.kind:5s} input: mean |x| {r.mean_abs:.3f}, max {r.max_over_mean:.0f}x the mean, "
              f"{100 * r.share_beyond_6_mean:.2f} % beyond 6x{clipped}")  # fmt: skip


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
    p.add_argument("--trained", type=Path, help="a trained k-bit run: how much of the float inputs its steps clip")
    p.add_argument("--out", default="benchmarks/results/binarization_damage.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    checkpoint = read_checkpoint(args.init)
    encoder = checkpoint.text_encoder()
    task = get_task(args.task)
    examples = load_split(task, "dev", args.data_dir)[: args.sentences]
    dataset = encode(encoder, examples, 128, "dev", lambda m: None)
    batch = make_collate(encoder.pad_id)([dataset[i] for i in range(len(dataset))])
    float_model = build(checkpoint, (), 32)
    reference = hidden_states(float_model, batch)
    # variant: (1-bit weight kinds, embedding bits, activation bits, quantized-input kinds[, channels kept])
    variants = {
        "every encoder linear 1-bit, float token embeddings": (LINEAR_KINDS, 32, 32, ()),
        "every encoder linear and the token embeddings 1-bit (the --init default)": (LINEAR_KINDS, 1, 32, ()),
        "only the token embeddings 1-bit": ((), 1, 32, ()),
        **{f"only the {kind} linears 1-bit": ((kind,), 32, 32, ()) for kind in LINEAR_KINDS},
        **{f"float weights, every linear's input at {bits} bit(s)": ((), 32, bits, LINEAR_KINDS) for bits in (4, 2, 1)},
        **{f"float weights, only the {kind} inputs at 4 bits": ((), 32, 4, (kind,)) for kind in LINEAR_KINDS},
        "every encoder linear 1-bit and its input at 4 bits, float token embeddings": (
            LINEAR_KINDS,
            32,
            4,
            LINEAR_KINDS,
        ),
        **{
            f"float weights, every linear's input at {bits} bit(s), its {kept} largest channels kept in float": (
                (), 32, bits, LINEAR_KINDS, kept,
            )
            for bits in (4, 2, 1)
            for kept in (4, 8, 16)
        },
        "every encoder linear 1-bit and its input at 4 bits, 8 channels kept, float token embeddings": (
            LINEAR_KINDS, 32, 4, LINEAR_KINDS, 8,
        ),
        # the unsigned levels of lin2's input (after GELU) from GELU's minimum, not 0 (act_gelu_floor)
        **{
            f"float weights, only the lin2 inputs at {bits} bit(s), levels from GELU's minimum": (
                (), 32, bits, ("lin2",), 0, True,
            )
            for bits in (4, 2, 1)
        },
        **{
            f"float weights, every linear's input at {bits} bit(s), lin2's levels from GELU's minimum": (
                (), 32, bits, LINEAR_KINDS, 0, True,
            )
            for bits in (4, 2, 1)
        },
        "every encoder linear 1-bit and its input at 4 bits, lin2's levels from GELU's minimum, float token "
        "embeddings": (LINEAR_KINDS, 32, 4, LINEAR_KINDS, 0, True),
    }  # fmt: skip
    rows = []
    for variant, (kinds, embedding_bits, act_bits, act_kinds, *extra) in variants.items():
        model = build(checkpoint, kinds, embedding_bits, act_bits, act_kinds, *extra)
        rows.append(Damage(variant, cosines(hidden_states(model, batch), reference, batch["attention_mask"])))
        print(f"{variant:80s} " + " ".join(f"{c:.3f}" for c in rows[-1].cosine_per_layer))
    print("inputs of the float checkpoint's linears:")
    describe(ranges := input_ranges(float_model, batch))
    trained_ranges = None
    if args.trained:
        print(f"inputs of the trained run {args.trained}:")
        describe(trained_ranges := input_ranges(BEExformer.from_pretrained(args.trained / "best").eval(), batch))
    result = {
        "what": "cosine similarity of token hidden states to the float checkpoint's, before any training; "
        "activation rows: quantizers at their initial step (LSQ rule from this batch)",
        "layers": ["embeddings"] + [f"block {i + 1}" for i in range(len(reference) - 1)],
        "task": args.task,
        "n_sentences": len(examples),
        "init": args.init,
        "rows": [asdict(r) for r in rows],
        "input_ranges": [asdict(r) for r in ranges],
        "trained": str(args.trained) if args.trained else None,
        "trained_input_ranges": [asdict(r) for r in trained_ranges] if trained_ranges else None,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": platform.processor() or platform.machine(),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
