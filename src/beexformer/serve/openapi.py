"""The OpenAPI 3.1 description served at `GET /openapi.json` (written out: Starlette does not derive one)."""

from __future__ import annotations

from beexformer.serve.schema import Limits

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_spec(limits: Limits, api_key: bool) -> dict:
    predict_request = {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": {
                "description": "Texts, or [text, text] pairs for sentence-pair tasks (not mixed).",
                "type": "array",
                "minItems": 1,
                "maxItems": limits.max_inputs,
                "items": {
                    "oneOf": [
                        {"type": "string", "maxLength": limits.max_text_chars},
                        {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                    ]
                },
            },
            "exit_threshold": {
                "type": "number",
                "description": "The knob of the model's exit rule (delta for fractional entropy); default: the "
                "one stored with the model.",
            },
        },
    }
    result = {
        "type": "object",
        "properties": {
            "label": {"type": ["string", "integer", "null"], "description": "null for regression (STS-B)"},
            "score": {"type": "number", "description": "probability of the label, or the predicted value"},
            "probabilities": {
                "type": "array",
                "items": {"type": "number"},
                "description": "per label (not for regression)",
            },
            "exit_layer": {"type": "integer", "description": "1-based block the input left at"},
        },
        "required": ["label", "score", "exit_layer"],
    }
    predict_response = {
        "type": "object",
        "properties": {"model": {"type": "string"}, "results": {"type": "array", "items": result}},
    }
    predict = {
        "summary": "Label texts with per-sample early exit (requests arriving together share a batch)",
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": predict_request}}},
        "responses": {
            "200": _json("One result per input, in order", predict_response),
            "400": _error("Malformed JSON"),
            "401": _error("Missing or wrong API key"),
            "404": _error("Unknown model"),
            "413": _error(
                f"Too many inputs (> {limits.max_inputs}), a text too long (> {limits.max_text_chars} characters) "
                f"or a body too large (> {limits.max_body_bytes} bytes)"
            ),
            "422": _error("Wrong types or shape"),
            "500": _error("A failure inside the server (never bad input)"),
            "503": _error("Queue full; retry after the Retry-After header's seconds"),
        },
    }
    spec: dict = {
        "openapi": "3.1.0",
        "info": {"title": "beex serve", "version": "1", "description": "Packed BEExformer models over HTTP."},
        "paths": {
            "/v1/models/{name}/predict": {"post": predict},
            "/v1/models": {
                "get": {
                    "summary": "Served models: name, task, labels, bits, size",
                    "responses": {"200": _json("Models", {"type": "object"})},
                }
            },
            "/healthz": {
                "get": {"summary": "The process is up", "responses": {"200": _json("ok", {"type": "object"})}}
            },
            "/readyz": {
                "get": {
                    "summary": "Models loaded and warmed up, not shutting down",
                    "responses": {"200": _json("ready", {"type": "object"}), "503": _error("Not ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text format)",
                    "responses": {"200": {"description": "metrics", "content": {"text/plain": {}}}},
                }
            },
            "/openapi.json": {"get": {"summary": "This description", "responses": {"200": _json("OpenAPI", {})}}},
        },
        "components": {"schemas": {"Error": _ERROR}},
    }
    if api_key:
        spec["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "header": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        spec["security"] = [{"bearer": []}, {"header": []}]
        for path in ("/healthz", "/readyz"):
            spec["paths"][path]["get"]["security"] = []
    return spec
