"""Packed files: size, and clear errors (never a crash in a kernel) for corrupt or truncated files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from beexformer.engine import is_packed_model, looks_packed
from beexformer.engine.export import export_model
from beexformer.engine.format import CHECKSUM_KEY, PackedFile, content_digest, read_packed
from beexformer.engine.runtime import PackedModel
from beexformer.errors import CheckpointError, DataError
from conftest import make_model, padded, random_batch

LAYOUTS = {
    "w1a1": dict(act_bits=1),
    # the layout of the pretrained start with learned input quantizers and the gated SLFN
    "w1a4-bert": dict(act_bits=4, ffn="ffn_slfn", position="learned", layer_norm_eps=1e-12, pooling="cls"),
}


@pytest.fixture(params=list(LAYOUTS))
def packed_file(request, tmp_path, tiny_tokenizer_dir):
    tok_dir, encoder = tiny_tokenizer_dir
    model = make_model(vocab_size=encoder.vocab_size, d_model=128, d_ff=256, **LAYOUTS[request.param])
    return export_model(model, tok_dir, tmp_path / "model.beex"), model


def test_packed_file_is_small(packed_file, tmp_path):
    path, model = packed_file
    model.save_pretrained(tmp_path / "float")
    float_bytes = (tmp_path / "float" / "model.safetensors").stat().st_size
    assert looks_packed(path) and is_packed_model(path) and not is_packed_model(tmp_path / "float")
    assert path.stat().st_size * 5 < float_bytes  # tiny model: LayerNorms, exits and tokenizer weigh more


def test_truncated_file_gives_clear_error(packed_file, tmp_path):
    path, _ = packed_file
    data = path.read_bytes()
    for cut in (0, 4, 8, 100, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.beex"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            PackedModel.load(bad)


def _same_content(a: PackedFile, b: PackedFile) -> bool:
    return (
        a.metadata == b.metadata
        and a.tensors.keys() == b.tensors.keys()
        and all(
            a.tensors[n].dtype == b.tensors[n].dtype and np.array_equal(a.tensors[n], b.tensors[n]) for n in a.tensors
        )
    )


@pytest.mark.parametrize("region", ["header", "data"])
def test_corrupt_bytes_give_clear_error(packed_file, tmp_path, region):
    """One changed byte anywhere: a CheckpointError with a one-line message, or (a change JSON cannot see,
    such as a space turned into a tab in the header's padding) a file that reads back to exactly the same
    tensors and metadata. A corrupted file never loads as a different model."""
    path, _ = packed_file
    original = read_packed(path)
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    lo, hi = (8, 8 + header_len) if region == "header" else (8 + header_len, len(data))
    rng = np.random.default_rng(0)
    errors = 0
    for trial in range(40):
        bad = bytearray(data)
        pos = int(rng.integers(lo, hi))
        bad[pos] = (bad[pos] + int(rng.integers(1, 256))) % 256  # always a different byte
        target = tmp_path / f"bad{trial}.beex"
        target.write_bytes(bytes(bad))
        try:
            loaded = read_packed(target)
        except CheckpointError as err:
            assert "\n" not in str(err)
            errors += 1
            continue
        assert _same_content(loaded, original), f"byte {pos} changed and the file loaded as another model"
    assert errors >= 35


def test_checksum_catches_a_flipped_weight_bit(packed_file, tmp_path):
    path, _ = packed_file

    def flip(t, m):
        t["blocks.0.attn.q.bits"][0, 0] ^= np.uint64(1)

    with pytest.raises(CheckpointError, match="checksum"):
        PackedModel.load(_rewrite(path, tmp_path, flip, keep_digest=True))


def _rewrite(path, tmp_path, mutate, keep_digest: bool = False) -> str:
    """Rewrite a packed file with `mutate` applied to its tensors and metadata. The checksum is recomputed
    (a file an exporter wrote wrong, which the content checks must catch) unless `keep_digest` or the
    mutation removed it."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    with safe_open(str(path), framework="numpy") as fh:
        metadata = dict(fh.metadata())
    tensors = load_file(str(path))
    mutate(tensors, metadata)
    if not keep_digest and CHECKSUM_KEY in metadata:
        metadata[CHECKSUM_KEY] = content_digest(tensors, metadata)
    out = tmp_path / "mutated.beex"
    save_file(tensors, str(out), metadata=metadata)
    return out


@pytest.mark.parametrize(
    "mutation,message",
    [
        (lambda t, m: t.pop("blocks.0.attn.q.bits"), "missing tensors"),
        (lambda t, m: t.__setitem__("blocks.0.attn.q.bits", t["blocks.0.attn.q.bits"][:1]), "expected"),
        (
            lambda t, m: t.__setitem__("blocks.0.norm1.weight", t["blocks.0.norm1.weight"].astype(np.float64)),
            "expected",
        ),
        (lambda t, m: t["blocks.1.norm2.bias"].__setitem__(0, np.nan), "NaN"),
        (lambda t, m: m.__setitem__("format", "something-else"), "not a beexformer packed model"),
        (lambda t, m: m.__setitem__("format_version", "99"), "version"),
        (lambda t, m: m.pop(CHECKSUM_KEY), "checksum"),
        (lambda t, m: m.__setitem__("config", json.dumps({"d_model": "x"})), "config"),
        (lambda t, m: t.__setitem__("tokenizer.json.zlib", np.zeros(10, np.uint8)), "tokenizer"),
    ],
)
def test_invalid_content_gives_clear_error(packed_file, tmp_path, mutation, message):
    path, _ = packed_file
    bad = _rewrite(path, tmp_path, mutation)
    with pytest.raises(CheckpointError, match=message):
        PackedModel.load(bad)


def test_padding_bits_are_checked(tmp_path, tiny_tokenizer_dir):
    tok_dir, encoder = tiny_tokenizer_dir
    model = make_model(act_bits=1, vocab_size=encoder.vocab_size, d_model=96, n_heads=4)  # K % 64 != 0
    path = export_model(model, tok_dir, tmp_path / "odd.beex")
    PackedModel.load(path)

    def set_tail(t, m):
        t["blocks.0.attn.q.bits"][-1, 0] |= np.uint64(1) << np.uint64(63)

    with pytest.raises(CheckpointError, match="bits set beyond"):
        PackedModel.load(_rewrite(path, tmp_path, set_tail))


@pytest.mark.parametrize(
    "mutation,message",
    [
        (lambda t, m: t["blocks.0.ffn.lin2.act_step"].__setitem__(0, 0.0), "step must be > 0"),
        (lambda t, m: t["blocks.1.attn.k.act_step"].__setitem__(0, -1.0), "step must be > 0"),
        (lambda t, m: t.pop("blocks.0.attn.q.act_threshold"), "missing tensors"),
        (lambda t, m: t.__setitem__("blocks.0.ffn.slfn_gate", t["blocks.0.ffn.slfn_gate"][:3]), "expected"),
    ],
)
def test_invalid_quantizer_tensors_give_clear_error(tmp_path, tiny_tokenizer_dir, mutation, message):
    tok_dir, encoder = tiny_tokenizer_dir
    model = make_model(vocab_size=encoder.vocab_size, **LAYOUTS["w1a4-bert"])
    path = export_model(model, tok_dir, tmp_path / "q.beex")
    with pytest.raises(CheckpointError, match=message):
        PackedModel.load(_rewrite(path, tmp_path, mutation))


@pytest.mark.parametrize(
    "mutation,message",
    [
        (lambda t, m: t["blocks.0.attn.q.act_outliers"].__setitem__(0, -1), "channels must be"),
        (lambda t, m: t["blocks.1.ffn.lin2.act_outliers"].__setitem__(2, 96), "channels must be"),  # d_ff = 96
        (
            lambda t, m: t["blocks.0.ffn.lin1.act_outliers"].__setitem__(1, t["blocks.0.ffn.lin1.act_outliers"][0]),
            "channels must be",
        ),
        (lambda t, m: t.pop("blocks.0.attn.o.act_outliers"), "missing tensors"),
    ],
)
def test_invalid_outlier_channels_give_clear_error(tmp_path, tiny_tokenizer_dir, mutation, message):
    tok_dir, encoder = tiny_tokenizer_dir
    model = make_model(vocab_size=encoder.vocab_size, act_bits=4, ffn="ffn", position="learned", act_outliers=3)
    path = export_model(model, tok_dir, tmp_path / "q.beex")
    PackedModel.load(path)
    with pytest.raises(CheckpointError, match=message):
        PackedModel.load(_rewrite(path, tmp_path, mutation))


def test_export_refuses_what_the_runtime_does_not_run():
    from beexformer.engine.export import packed_tensors

    with pytest.raises(CheckpointError, match="ffn_slfn"):
        packed_tensors(make_model(act_bits=1, ffn="ffn_slfn"))


def test_learned_positions_cut_to_the_task_length(tmp_path, tiny_tokenizer_dir):
    """A 48-row position table exported for a task truncated at 16 tokens keeps 16 rows; same logits."""
    tok_dir, encoder = tiny_tokenizer_dir
    model = make_model(vocab_size=encoder.vocab_size, act_bits=2, ffn="ffn", position="learned")
    path = export_model(model, tok_dir, tmp_path / "cut.beex", task_info={"max_len": 16})
    packed = PackedModel.load(path)
    assert packed.config.max_len == 16 and packed.positions.shape == (16, model.config.d_model)
    ids, segs = random_batch(5, model.config.vocab_size, 16, seed=2)
    with torch.no_grad():
        ref = model(*padded(ids, segs)).exit_logits.numpy()
    np.testing.assert_allclose(packed.run(ids, segs).exit_logits, ref, atol=1e-3)
    with pytest.raises(DataError, match="at most 16"):
        packed.run([list(range(17))])
    # `beex export --check` draws its random inputs within the file's length (it drew up to the 48 rows of
    # the checkpoint, and refused every pretrained model cut to its task's 128 tokens)
    from beexformer.bundle import TaskInfo, save_model_dir
    from beexformer.engine.export import check_export

    save_model_dir(tmp_path / "run", model, encoder, TaskInfo("sst2", ["negative", "positive"], 16))
    assert check_export(tmp_path / "run", path) < 1e-3


def test_bad_inputs_give_clear_errors(packed_file):
    path, model = packed_file
    packed = PackedModel.load(path)
    with pytest.raises(DataError):
        packed.run([[0, 1, 10**6]])
    with pytest.raises(DataError):
        packed.run([[]])
    with pytest.raises(DataError):
        packed.run([list(range(model.config.max_len + 1))])


@pytest.mark.parametrize(
    ("fields", "label"),
    [({"act_bits": 4}, "W1A4 (LSQ)"), ({"act_bits": 1, "act_binarizer": "elastic"}, "W1A1 (elastic)")],
)
def test_packed_summary_names_the_activation_quantizer(tmp_path, tiny_tokenizer_dir, fields, label):
    from beexformer.engine import packed_summary

    tok_dir, encoder = tiny_tokenizer_dir
    path = export_model(make_model(vocab_size=encoder.vocab_size, **fields), tok_dir, tmp_path / "m.beex")
    assert packed_summary(path).bits.startswith(label + " / ")


def test_int8_token_table_is_stored_as_int8(tmp_path, tiny_tokenizer_dir):
    """An 8-bit token table costs one byte per entry in the file, and the summary counts it as 8-bit."""
    from beexformer.engine import packed_summary

    tok_dir, encoder = tiny_tokenizer_dir
    model = make_model(vocab_size=encoder.vocab_size, embedding_bits=8)
    path = export_model(model, tok_dir, tmp_path / "m.beex")
    summary = packed_summary(path)
    entries = encoder.vocab_size * model.config.d_model
    assert summary.parts["int8 codes"] == entries and summary.int8_params == entries
    assert summary.to_dict()["parameters"]["8-bit"] == entries
    assert summary.bits.split(" / ")[1] == "8"  # "W1A32 / embeddings / exits"
