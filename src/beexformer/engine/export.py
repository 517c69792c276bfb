"""Export a trained BEExformer (PyTorch) to the packed 1-bit file the numpy/numba runtime reads.

This module imports torch (it reads the training checkpoint); the runtime side (`format`, `runtime`) does not.
Only the sign bits and the per-row scales of binarized weights are written: the float latent weights the
optimizer needed are dropped (the peers' "binary model that is not smaller" complaint).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from beexformer.engine.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    TOKENIZER_TENSOR,
    block_linears,
    block_names,
    expected_tensors,
)
from beexformer.engine.packing import pack_signs, pack_weight
from beexformer.errors import CheckpointError

MODEL_SUBDIRS = ("", "model", "best", "final", "checkpoint")
TOKENIZER_SUBDIRS = ("", "tokenizer", "model", "model/tokenizer")


def find_model_dir(run_dir: str | Path) -> Path:
    """The folder of `run_dir` (itself or a subfolder) with config.json + model.safetensors."""
    from beexformer.model import CONFIG_NAME, WEIGHTS_NAME

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a directory (expected a training run directory)")
    for sub in MODEL_SUBDIRS:
        candidate = run_dir / sub
        if (candidate / CONFIG_NAME).is_file() and (candidate / WEIGHTS_NAME).is_file():
            return candidate
    raise CheckpointError(
        f"{run_dir}: no {CONFIG_NAME} + {WEIGHTS_NAME} in it or in {', '.join(MODEL_SUBDIRS[1:])}/"
    )


def find_tokenizer_dir(run_dir: str | Path, model_dir: str | Path | None = None) -> Path:
    """The directory with the run's tokenizer.json (and text_encoder.json)."""
    roots = [Path(run_dir)] + ([Path(model_dir)] if model_dir is not None else [])
    for root in roots:
        for sub in TOKENIZER_SUBDIRS:
            if (root / sub / "tokenizer.json").is_file():
                return root / sub
    raise CheckpointError(f"{run_dir}: no tokenizer.json found (give --tokenizer DIR)")


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").contiguous().numpy()


def packed_tensors(model) -> dict[str, np.ndarray]:
    """The packed tensors of a BEExformer (in eval mode), named as `format.expected_tensors` says."""
    import torch

    from beexformer.binarize import weight_scale

    config = model.config
    out: dict[str, np.ndarray] = {}

    def linear(prefix: str, module) -> None:
        w = module.weight.detach().float()
        if getattr(module, "weight_bits", 32) == 1:
            # Computed with the very torch ops the layer uses, so the runtime's alpha is bit-identical.
            alpha = weight_scale(w, module.weight_scale_mode).reshape(-1)
            out[f"{prefix}.bits"] = pack_weight(_np(w))
            out[f"{prefix}.alpha"] = np.ascontiguousarray(np.broadcast_to(_np(alpha), (w.shape[0],)))
        else:
            out[f"{prefix}.weight"] = _np(w)
        bias = module.bias if module.bias is not None else torch.zeros(w.shape[0])
        out[f"{prefix}.bias"] = _np(bias.detach().float())

    emb = model.embeddings
    table = emb.token.weight.detach().float()
    if emb.token.is_binary:
        out["embeddings.token.bits"] = pack_signs(_np(table))
        out["embeddings.token.scale"] = _np(table.abs().mean(dim=-1))
    else:
        out["embeddings.token.weight"] = _np(table)
    if emb.position_kind == "learned":
        out["embeddings.position.weight"] = _np(emb.position.weight.float())
    if emb.segment is not None:
        out["embeddings.segment.weight"] = _np(emb.segment.weight.float())
    out["embeddings.norm.weight"] = _np(emb.norm.weight.float())
    out["embeddings.norm.bias"] = _np(emb.norm.bias.float())
    for index, prefix in enumerate(block_names(config)):
        block = model.blocks[index]
        for name, _, _ in block_linears(config):
            linear(f"{prefix}.{name}", block.get_submodule(name))
        for norm in ("norm1", "norm2"):
            out[f"{prefix}.{norm}.weight"] = _np(getattr(block, norm).weight.float())
            out[f"{prefix}.{norm}.bias"] = _np(getattr(block, norm).bias.float())
    for i, head in enumerate(model.exits):
        if config.norm == "pre":
            out[f"exits.{i}.norm.weight"] = _np(head.norm.weight.float())
            out[f"exits.{i}.norm.bias"] = _np(head.norm.bias.float())
        linear(f"exits.{i}.fc1", head.fc1)
        linear(f"exits.{i}.fc2", head.fc2)
    expected = expected_tensors(config)
    assert set(out) == set(expected), sorted(set(out) ^ set(expected))
    return out


def export_model(model, tokenizer_dir: str | Path, out_path: str | Path, source: str = "") -> Path:
    """Write `model` (a BEExformer) and the tokenizer in `tokenizer_dir` as one packed safetensors file."""
    from safetensors.numpy import save_file

    tokenizer_dir = Path(tokenizer_dir)
    tokenizer_json = (tokenizer_dir / "tokenizer.json").read_bytes()
    encoder_cfg_path = tokenizer_dir / "text_encoder.json"
    text_encoder = json.loads(encoder_cfg_path.read_text()) if encoder_cfg_path.is_file() else {}
    if model.config.exit_bits == 1 and model.exits[0].fc1.act_bits != 32:
        raise CheckpointError("exit heads with 1-bit inputs are not supported by the packed runtime")
    tensors = packed_tensors(model.eval())
    tensors[TOKENIZER_TENSOR] = np.frombuffer(zlib.compress(tokenizer_json, 9), dtype=np.uint8).copy()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "text_encoder": json.dumps(text_encoder),
        "source": source,
    }
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_path), metadata=metadata)
    return out_path


def export_run(run_dir: str | Path, out_path: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """`beex export RUN_DIR --out MODEL`: find the checkpoint and tokenizer of a run and pack them."""
    from beexformer.model import BEExformer

    model_dir = find_model_dir(run_dir)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else find_tokenizer_dir(run_dir, model_dir)
    if not (tok_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"{tok_dir}: no tokenizer.json")
    model = BEExformer.from_pretrained(model_dir)
    return export_model(model, tok_dir, out_path, source=str(Path(run_dir).resolve()))
