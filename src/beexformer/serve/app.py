"""The ASGI app of `beex serve` (Starlette): routes, JSON errors, API key, metrics and the batchers' lifecycle.

    app = create_app([ServedModel("sst2", "sst2.beex")], ServeConfig(max_batch=32))

The batchers start in the app's lifespan (after one warm-up batch per model, which is when /readyz turns
200) and stop after uvicorn has answered every request in flight, so a drain finishes the queued work.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beexformer.errors import ConfigError
from beexformer.serve.batching import MicroBatcher, QueueFull
from beexformer.serve.metrics import ServerMetrics
from beexformer.serve.model import ServedModel, pin_threads
from beexformer.serve.openapi import openapi_spec
from beexformer.serve.schema import ApiError, Limits, parse_predict

PREDICT_ROUTE = "/v1/models/{name}/predict"
OPEN_PATHS = ("/healthz", "/readyz")  # probes answer without the API key
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class ServeConfig:
    max_batch: int = 32
    max_wait_ms: float = 5.0
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    threads: int | None = None  # kernel threads of the inference thread (None: model.default_threads())
    min_batch: int | None = None  # a free engine starts a batch at this many queued inputs (None: max_batch)


class ServerState:
    def __init__(self, models: list[ServedModel], config: ServeConfig) -> None:
        self.models = {m.card.name: m for m in models}
        self.config = config
        self.metrics = ServerMetrics(max(m.card.n_blocks for m in models))
        self.batchers: dict[str, MicroBatcher] = {}
        self.executor: ThreadPoolExecutor | None = None  # the inference thread, while the app runs
        self.ready = False
        self.draining = False  # set on SIGTERM: /readyz says 503 while the queue drains


def create_app(models: list[ServedModel], config: ServeConfig) -> Starlette:
    if not models:
        raise ConfigError("no model to serve")
    state = ServerState(models, config)
    routes = [
        Route(PREDICT_ROUTE, _predict, methods=["POST"]),
        Route("/v1/models", _list_models, methods=["GET"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=_lifespan,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )
    app.state.beex = state
    app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)  # outermost: 401s are counted too
    return app


def server_state(app: Starlette) -> ServerState:
    return app.state.beex


@asynccontextmanager
async def _lifespan(app: Starlette):
    state: ServerState = app.state.beex
    cfg = state.config
    executor = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="beex-inference", initializer=pin_threads, initargs=(cfg.threads,)
    )
    state.executor = executor
    loop = asyncio.get_running_loop()
    for name, model in state.models.items():
        await loop.run_in_executor(executor, model.warm_up)  # compile/cache the kernels before /readyz
        batcher = MicroBatcher(
            model,
            executor,
            max_batch=cfg.max_batch,
            max_wait_s=cfg.max_wait_ms / 1000,
            max_queue=cfg.limits.max_queue,
            on_batch=state.metrics.observe_batch,
            on_queue=state.metrics.set_queue_depth,
            min_batch=cfg.min_batch,
        )
        batcher.start()
        state.batchers[name] = batcher
    _freeze_startup_objects()
    state.ready = True
    try:
        yield
    finally:
        state.ready = False
        for batcher in state.batchers.values():
            await batcher.stop()
        executor.shutdown(wait=True)
        gc.unfreeze()  # an app run in a longer process (tests, an embedding program) gives its objects back


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up (numba's compiler state, the models, the imported modules: some
    240,000 objects with one SST-2 model) out of the garbage collector's reach. They live as long as the
    process, yet every full collection walked them all: pauses of 60-120 ms in the middle of serving (a traced
    load run), the p99 of the load benchmark. Requests then only make short-lived objects, which the young
    generations collect cheaply."""
    gc.collect()
    gc.freeze()


# ----------------------------------------------------------------------------------------------------------
# routes


async def _predict(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.beex
    name = request.path_params["name"]
    model = state.models.get(name)
    if model is None:
        served = ", ".join(sorted(state.models))
        raise ApiError(404, "unknown_model", f"no model named {name!r}; served: {served}")
    limits = state.config.limits
    body = await _read_body(request, limits.max_body_bytes)
    req = parse_predict(body, model.card, limits)
    if req.exit_threshold is not None:  # refused here, with a 422, rather than in the batch
        try:
            model.exit_rule(req.exit_threshold)
        except ConfigError as err:
            raise ApiError(422, "invalid_request", str(err)) from None
    try:
        results = await state.batchers[name].submit(req.texts_a, req.texts_b, req.exit_threshold)
    except QueueFull as err:
        raise ApiError(
            503,
            "queue_full",
            f"model {name!r} has {err.limit} inputs waiting (the --max-queue limit); retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    return JSONResponse({"model": name, "results": [r.to_json() for r in results]})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (never read whole into memory first)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_content_length", f"Content-Length {declared!r} is not a byte count")
        if int(declared) > limit:
            raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body has at least {size} bytes; the limit is {limit} bytes")


async def _list_models(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.beex
    return JSONResponse({"models": [m.card.to_json() for m in state.models.values()]})


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _readyz(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.beex
    if state.ready and not state.draining:
        return JSONResponse({"status": "ready"})
    reason = "shutting down" if state.draining else "starting"
    return JSONResponse({"status": reason}, status_code=503)


async def _metrics(request: Request) -> Response:
    body, content_type = request.app.state.beex.metrics.render()
    return Response(body, media_type=content_type)


async def _openapi(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.beex
    return JSONResponse(openapi_spec(state.config.limits, state.config.api_key is not None))


# ----------------------------------------------------------------------------------------------------------
# errors and middleware


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own 404 (no such route) and 405 (wrong method), as JSON like every other error."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(ApiError(exc.status_code, code, message).body(), exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: a JSON 500 for the client; Starlette re-raises, so the log has the traceback."""
    error = ApiError(500, "internal_error", f"internal error ({type(exc).__name__}); the server log has details")
    return JSONResponse(error.body(), status_code=500)


def _route_label(path: str) -> str:
    """Bounded label values: the route template, never the raw path."""
    if path.startswith("/v1/models/") and path.endswith("/predict"):
        return PREDICT_ROUTE
    if path in ("/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        return path
    return "other"


class MetricsMiddleware:
    """Latency (request start to response start) and responses by status, for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        route = _route_label(scope["path"])
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.observe_request(route, message["status"], time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not started:  # an exception on its way to the outer error handler, which answers 500
                self.metrics.observe_request(route, 500, time.perf_counter() - start)


class ApiKeyMiddleware:
    """With a key configured, every request except the probes needs `Authorization: Bearer KEY` or
    `X-API-Key: KEY`, compared in constant time."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        error = ApiError(401, "unauthorized", "missing or wrong API key (Authorization: Bearer KEY or X-API-Key)")
        response = JSONResponse(error.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                given = value
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                given = value[7:]
        return hmac.compare_digest(given, self.key)
