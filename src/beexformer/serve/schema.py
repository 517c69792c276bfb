"""The predict request: limits, parsing and validation. Every refusal is an `ApiError` whose JSON body names
the problem (and the limit, for 413), so bad input never reaches the engine nor turns into a 500."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from beexformer.serve.model import ModelCard


@dataclass(frozen=True)
class Limits:
    max_inputs: int = 64  # inputs in one request
    max_text_chars: int = 10_000  # characters in one text (the model truncates to its max tokens anyway)
    max_body_bytes: int = 1 << 20  # request body
    max_queue: int = 1024  # inputs waiting per model; past it, 503 with Retry-After


class ApiError(Exception):
    """An HTTP error answer: status, a stable machine-readable code and a sentence for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class PredictRequest:
    texts_a: list[str]
    texts_b: list[str] | None
    exit_threshold: float | None


FIELDS = ("inputs", "exit_threshold")


def parse_predict(body: bytes, card: ModelCard, limits: Limits) -> PredictRequest:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise _invalid('the body must be a JSON object like {"inputs": ["text", ...]}')
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise _invalid(f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(FIELDS)}")
    texts_a, texts_b = _inputs(payload.get("inputs"), card, limits)
    return PredictRequest(texts_a, texts_b, _threshold(payload.get("exit_threshold")))


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def _inputs(inputs, card: ModelCard, limits: Limits) -> tuple[list[str], list[str] | None]:
    if not isinstance(inputs, list) or not inputs:
        raise _invalid('"inputs" must be a non-empty list of texts, or of [text, text] pairs')
    if len(inputs) > limits.max_inputs:
        raise ApiError(413, "too_many_inputs", f"{len(inputs)} inputs in one request; the limit is {limits.max_inputs}")
    pairs = isinstance(inputs[0], list)
    for i, item in enumerate(inputs):
        ok = _is_pair(item) if pairs else isinstance(item, str)
        if not ok:
            kind = "a [text, text] pair" if pairs else "a string"
            raise _invalid(f"inputs[{i}] must be {kind} like inputs[0] (no mixing of texts and pairs)")
    if card.pair is True and not pairs:
        raise _invalid(f'model {card.name!r} ({card.task}) takes sentence pairs: [["a", "b"], ...]')
    if card.pair is False and pairs:
        raise _invalid(f'model {card.name!r} ({card.task}) takes single texts: ["text", ...]')
    texts = [t for item in inputs for t in (item if pairs else [item])]
    longest = max(len(t) for t in texts)
    if longest > limits.max_text_chars:
        raise ApiError(413, "text_too_long", f"a text has {longest} characters; the limit is {limits.max_text_chars}")
    if pairs:
        return [a for a, _ in inputs], [b for _, b in inputs]
    return list(inputs), None


def _is_pair(item) -> bool:
    return isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)


def _threshold(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _invalid('"exit_threshold" must be a finite number (the knob of the model\'s exit rule)')
    return float(value)
