"""Export a trained BEExformer (PyTorch) to the packed 1-bit file the numpy/numba runtime reads.

This module imports torch (it reads the training checkpoint); the runtime side (`format`, `runtime`) does not.
Only the sign bits and the per-row scales of binarized weights are written: the float latent weights the
optimizer needed are dropped (the peers' "binary model that is not smaller" complaint).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np

from beexformer.accounting import FileSizes
from beexformer.config import BEExformerConfig
from beexformer.engine.format import (
    CHECKPOINT_BYTES_KEY,
    CHECKSUM_KEY,
    FORMAT_NAME,
    FORMAT_VERSION,
    TOKENIZER_TENSOR,
    act_mode,
    block_linears,
    block_names,
    content_digest,
    expected_tensors,
)
from beexformer.engine.packing import pack_signs, pack_weight
from beexformer.errors import CheckpointError


def _np(t) -> np.ndarray:
    return t.detach().to("cpu").contiguous().numpy()


def packed_config(model, task_info: dict | None = None) -> BEExformerConfig:
    """The config written into the packed file: the model's, with max_len cut to the task's truncation length
    when positions are learned (a BERT checkpoint's 512-row table, of which inputs truncated to the run's
    --max-len use the first rows): the function on every input the model accepts is unchanged."""
    config = model.config
    task_len = int((task_info or {}).get("max_len") or 0)
    if config.position == "learned" and 0 < task_len < config.max_len:
        return dataclasses.replace(config, max_len=task_len)
    return config


def packed_tensors(model, config: BEExformerConfig | None = None) -> dict[str, np.ndarray]:
    """The packed tensors of a BEExformer (in eval mode), named as `format.expected_tensors(config)` says
    (`config`: `packed_config`'s, the model's by default)."""
    import torch

    from beexformer.binarize import weight_scale

    config = config or model.config
    max_len = config.max_len
    planes = act_mode(config) == "planes"
    if config.weight_bits == 32 and config.act_bits != 32:
        raise CheckpointError(f"weight_bits=32 with act_bits={config.act_bits}: the packed engine has no such layer")
    if act_mode(config) == "sign" and config.ffn == "ffn_slfn":
        raise CheckpointError(
            "ffn='ffn_slfn' with the 1-bit mean-sign: the packed engine runs the gated SLFN with float, 2-/4-bit "
            "or elastic 1-bit activations only; evaluate this run with PyTorch (beex eval RUN)"
        )
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

    def input_quantizer(prefix: str, module) -> None:
        """The learned step (clamped as in `ActivationQuantizer.forward`) and threshold of a layer's input."""
        quantizer = module.input_quantizer
        if not bool(quantizer.initialized):
            raise CheckpointError(f"{prefix}: its activation quantizer was never initialised (the model never ran)")
        out[f"{prefix}.act_step"] = _np(quantizer.step.detach().float().clamp_min(1e-8).reshape(1))
        threshold = quantizer.threshold if quantizer.threshold is not None else torch.zeros(())
        out[f"{prefix}.act_threshold"] = _np(threshold.detach().float().reshape(1))
        if quantizer.outlier_channels is not None:
            out[f"{prefix}.act_outliers"] = _np(quantizer.outlier_channels).astype(np.int64)

    emb = model.embeddings
    table = emb.token.weight.detach().float()
    output_scale = getattr(emb.token, "output_scale", 1.0)
    if emb.token.is_binary:
        out["embeddings.token.bits"] = pack_signs(_np(table))
        # The embedding's constant output_scale (sqrt(d) with sinusoidal positions) is folded into the scale,
        # multiplied in the same order as BinaryEmbedding.forward, so the vectors are bit-identical.
        out["embeddings.token.scale"] = _np(table.abs().mean(dim=-1) * output_scale)
    elif emb.token.bits == 8:
        from beexformer.layers.embedding import int8_rows

        codes, scale = int8_rows(table, output_scale)  # the same function as the forward pass
        out["embeddings.token.codes"] = _np(codes).astype(np.int8)
        out["embeddings.token.scale"] = _np(scale[:, 0])
    else:
        out["embeddings.token.weight"] = _np(table * output_scale)
    if emb.position_kind == "learned":
        # Only the rows of the positions inputs can reach (max_len of the packed config, see export_model).
        out["embeddings.position.weight"] = _np(emb.position.weight.float()[:max_len])
    if emb.segment is not None:
        out["embeddings.segment.weight"] = _np(emb.segment.weight.float())
    out["embeddings.norm.weight"] = _np(emb.norm.weight.float())
    out["embeddings.norm.bias"] = _np(emb.norm.bias.float())
    for index, prefix in enumerate(block_names(config)):
        block = model.blocks[index]
        for name, _, _ in block_linears(config):
            linear(f"{prefix}.{name}", block.get_submodule(name))
            if planes:
                input_quantizer(f"{prefix}.{name}", block.get_submodule(name))
        if config.ffn == "ffn_slfn":
            out[f"{prefix}.ffn.slfn_gate"] = _np(block.ffn.slfn_gate.float())
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


def export_model(
    model, tokenizer_dir: str | Path, out_path: str | Path, source: str = "", task_info: dict | None = None
) -> Path:
    """Write `model` (a BEExformer), the tokenizer in `tokenizer_dir` and the task description (task.json of
    a model directory: task, labels, max_len, exit rule) as one packed safetensors file. When
    `tokenizer_dir` is the model directory, the size of its float32 checkpoint is recorded, so that the
    size ratio of the file (`accounting.FileSizes`) can be told without the checkpoint at hand."""
    from safetensors.numpy import save_file

    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"{tokenizer_dir}: no tokenizer.json")
    tokenizer_json = (tokenizer_dir / "tokenizer.json").read_bytes()
    encoder_cfg_path = tokenizer_dir / "text_encoder.json"
    text_encoder = json.loads(encoder_cfg_path.read_text()) if encoder_cfg_path.is_file() else {}
    config = packed_config(model, task_info)
    tensors = packed_tensors(model.eval(), config)
    tensors[TOKENIZER_TENSOR] = np.frombuffer(zlib.compress(tokenizer_json, 9), dtype=np.uint8).copy()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict()),
        "text_encoder": json.dumps(text_encoder),
        "task": json.dumps(task_info or {}),
        "source": source,
    }
    checkpoint = tokenizer_dir / "model.safetensors"
    if checkpoint.is_file():
        metadata[CHECKPOINT_BYTES_KEY] = str(checkpoint.stat().st_size)
    metadata[CHECKSUM_KEY] = content_digest(tensors, metadata)
    out_path = Path(out_path)
    if out_path.is_dir():
        raise CheckpointError(f"{out_path}: is a directory; --out takes a file name (e.g. model.beex)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(out_path)  # never leave a half-written model under the final name
    return out_path


def export_run(run_dir: str | Path, out_path: str | Path) -> Path:
    """`beex export RUN_DIR --out MODEL`: pack the model directory of a run (RUN_DIR/best, or RUN_DIR itself
    when it is a model directory): weights, tokenizer and task.json."""
    from beexformer.bundle import TASK_FILE, resolve_model_dir
    from beexformer.model import BEExformer

    model_dir = resolve_model_dir(run_dir)
    model = BEExformer.from_pretrained(model_dir)
    task_info = json.loads((model_dir / TASK_FILE).read_text())
    return export_model(model, model_dir, out_path, source=str(Path(model_dir).resolve()), task_info=task_info)


def measure_file_sizes(run_dir: str | Path) -> FileSizes:
    """The size ratio of a run or model directory: export it to a temporary file and measure both files."""
    import tempfile

    from beexformer.engine.summary import file_sizes

    with tempfile.TemporaryDirectory() as tmp:
        return file_sizes(export_run(run_dir, Path(tmp) / "model.beex"))


def check_export(run_dir: str | Path, packed_path: str | Path, n: int = 32, seed: int = 0) -> float:
    """Run the PyTorch model and the packed file on `n` random token sequences; the largest |difference| of
    any exit's logits (a sanity check of an export, not the SST-2 equivalence test)."""
    import torch

    from beexformer.bundle import resolve_model_dir
    from beexformer.engine.runtime import PackedModel
    from beexformer.model import BEExformer

    model = BEExformer.from_pretrained(resolve_model_dir(run_dir))
    packed = PackedModel.load(packed_path)
    c = model.config
    rng = np.random.default_rng(seed)
    # at most what the file takes: a pretrained model's position table is cut to its task's length on export
    lengths = rng.integers(2, packed.max_len + 1, n)
    ids = [rng.integers(0, c.vocab_size, int(length)) for length in lengths]
    t = int(lengths.max())
    input_ids = torch.zeros(n, t, dtype=torch.long)
    mask = torch.zeros(n, t, dtype=torch.long)
    for i, s in enumerate(ids):
        input_ids[i, : len(s)] = torch.as_tensor(s)
        mask[i, : len(s)] = 1
    with torch.no_grad():
        ref = model(input_ids, mask, torch.zeros_like(input_ids)).exit_logits.numpy()
    out = packed.run(ids, [np.zeros(len(s), dtype=np.int64) for s in ids]).exit_logits
    return float(np.abs(out - ref).max())
