"""The pretrained start (`--init`): a BERT checkpoint loaded into BEExformer computes what BertModel computes,
layer by layer; bad checkpoint directories give one-line errors naming the file."""

import json
import shutil

import pytest
import torch

from beexformer.errors import CheckpointError, ConfigError
from beexformer.pretrained import pretrained_model, read_checkpoint

FLOAT = dict(weight_bits=32, act_bits=32, embedding_bits=32, exit_bits=32)


def _inputs(vocab_size: int, n=5, t=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([t, t - 3, 4, t - 1, 7][:n])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, vocab_size, (n, t), generator=g) * mask
    types = ((torch.arange(t)[None, :] >= lengths[:, None] // 2).long()) * mask
    return ids, mask, types


def assert_same_hidden_states(directory, atol=1e-5):
    from transformers import BertModel

    checkpoint = read_checkpoint(str(directory))
    ours, _ = pretrained_model(checkpoint, n_classes=2, **FLOAT)
    ours.eval()
    theirs = BertModel.from_pretrained(str(directory), attn_implementation="eager").eval()
    ids, mask, types = _inputs(checkpoint.hf_config["vocab_size"])
    with torch.no_grad():
        expected = theirs(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True).hidden_states
        got = ours.hidden_states(ids, mask, types)
    assert len(got) == len(expected) == checkpoint.hf_config["num_hidden_layers"] + 1
    real = mask.bool()  # padding positions are not compared: neither model defines them
    for layer, (a, b) in enumerate(zip(got, expected, strict=True)):
        diff = (a - b).abs()[real].max().item()
        assert diff <= atol, f"hidden state {layer}: max |difference| {diff:.2e}"


def test_tiny_bert_hidden_states_equal_bertmodel(tiny_bert_dir):
    assert_same_hidden_states(tiny_bert_dir)


def test_minilm_hidden_states_equal_bertmodel(minilm_dir):
    assert_same_hidden_states(minilm_dir)


def test_minilm_tokenizer_matches_its_tokenizer_json(minilm_dir):
    from tokenizers import Tokenizer

    ours = read_checkpoint("minilm").text_encoder()
    reference = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    for text in ["Not bad at all!", "An UNBELIEVABLY dull, over-long film.", "Café naïve résumé 42 times"]:
        assert ours.tokenize(text) == reference.encode(text, add_special_tokens=False).tokens


def test_binarized_start_uses_the_checkpoint_as_latent_weights(tiny_bert_dir):
    from safetensors.torch import load_file

    model, encoder = pretrained_model(read_checkpoint(str(tiny_bert_dir)), n_classes=3)
    stored = load_file(str(tiny_bert_dir / "model.safetensors"))
    assert model.config.weight_bits == 1 and model.config.max_len == 128 and model.config.layer_norm_eps == 1e-12
    assert torch.equal(model.blocks[1].ffn.lin2.weight, stored["encoder.layer.1.output.dense.weight"])
    assert torch.equal(model.embeddings.token.weight, stored["embeddings.word_embeddings.weight"])
    assert encoder.tokenize("Not bad") == ["not", "bad"]


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "config.json: not found"),
        (lambda d: (d / "config.json").write_text('{"model_type": "gpt2"}'), "model_type 'gpt2', expected 'bert'"),
        (lambda d: (d / "vocab.txt").unlink(), "vocab.txt: not found"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors: not found"),
        (lambda d: (d / "vocab.txt").write_text("a\nb\n"), "vocab.txt: no [CLS], [SEP], [PAD], [UNK] token"),
    ],
)
def test_bad_checkpoint_directories_give_one_line_errors(tiny_bert_dir, tmp_path, damage, message):
    directory = _copy(tiny_bert_dir, tmp_path / "ckpt")
    damage(directory)
    with pytest.raises(CheckpointError) as err:
        pretrained_model(read_checkpoint(str(directory)), n_classes=2)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_config_name_the_tensor(tiny_bert_dir, tmp_path):
    directory = _copy(tiny_bert_dir, tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(CheckpointError, match=r"intermediate.dense.weight has shape \(64, 32\), config.json implies"):
        pretrained_model(read_checkpoint(str(directory)), n_classes=2)


def test_architecture_fields_cannot_be_overridden(tiny_bert_dir):
    with pytest.raises(ConfigError, match="d_model: set by the --init checkpoint"):
        read_checkpoint(str(tiny_bert_dir)).model_config(2, d_model=64)
    with pytest.raises(ConfigError, match="ffn='slfn'"):
        read_checkpoint(str(tiny_bert_dir)).model_config(2, ffn="slfn")


def test_unknown_init_names_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        read_checkpoint(str(tmp_path / "nothing"))
