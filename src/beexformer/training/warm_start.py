"""Starting a run from another finished run's weights (`--start-from RUN`): BiT's "weights first" and the
stages of a staged schedule.

The model is built as usual (from `--init` or from scratch, with this run's bits); then every weight of RUN's
best model is copied into it in place. Activation-quantizer entries are skipped on both sides: a new width
starts from a fresh data init (its first batch). A run whose shapes differ is refused in one line.
"""

from __future__ import annotations

from pathlib import Path

from beexformer.errors import ConfigError


def finished_weights(run: str | Path) -> Path:
    """RUN/best/<weights>, the weights a run starts from; a one-line error when the run has not finished."""
    from beexformer.model import WEIGHTS_NAME

    weights = Path(run) / "best" / WEIGHTS_NAME
    if not weights.is_file():
        raise ConfigError(f"{run}: no finished run there (no best/{WEIGHTS_NAME} to start from)")
    return weights


def start_from(model, previous_run: str | Path) -> None:
    """Copy `previous_run`'s best weights into `model` in place (an optimizer built on it keeps its parameters)."""
    from safetensors.torch import load_file

    def quantizer(key: str) -> bool:
        return ".input_quantizer." in key

    state = {k: v for k, v in load_file(str(finished_weights(previous_run))).items() if not quantizer(k)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ
        first = [line.strip() for line in str(err).splitlines() if line.strip()][1:2]
        raise ConfigError(f"{previous_run}: its weights do not fit this model ({'; '.join(first)})") from None
    missing = [k for k in missing if not quantizer(k)]
    if missing or unexpected:
        raise ConfigError(
            f"{previous_run}: its weights do not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
