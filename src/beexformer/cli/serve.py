"""`beex serve`: packed models behind an HTTP API (Starlette under uvicorn), with dynamic micro-batching.

Nothing here (nor in `beexformer.serve`) imports torch: the server runs packed files on numpy + numba.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys
from pathlib import Path

from beexformer.cli.common import add_parser, apply_threads
from beexformer.errors import BeexError, ConfigError, DataError

EXAMPLE = """  beex export runs/sst2 --out sst2.beex
  beex serve sst2.beex                                  # http://127.0.0.1:8080, model name "sst2"
  curl -s localhost:8080/v1/models/sst2/predict -d '{"inputs": ["a gorgeous, witty film"]}'
  beex serve sst2.beex rte=rte-w1a1.beex --max-batch 32 --max-wait-ms 5 --threads 2
  beex serve sst2.beex --host 0.0.0.0 --api-key-file key.txt   # clients send "Authorization: Bearer KEY\""""

GRACEFUL_SHUTDOWN_SECONDS = 60  # a drain that takes longer than this cancels what is left


# The inference thread needs the GIL between the engine's kernels (which release it); with Python's default
# 5 ms switch interval it could wait that long behind the event loop parsing requests. 0.5 ms: at concurrency
# 32 on two cores, 1054 -> 1260 req/s batched and 434 -> 636 unbatched (A/B runs of benchmarks/serve_load.py,
# docs/serve.md). BEEX_GIL_SWITCH_MS overrides it (5 restores Python's default), for such A/B runs.
GIL_SWITCH_MS = 0.5


def register(subparsers) -> None:
    p = add_parser(
        subparsers,
        "serve",
        help="serve packed models over HTTP (dynamic batching, metrics)",
        description="Serve packed model files (from `beex export`) over an HTTP JSON API: POST "
        "/v1/models/NAME/predict, GET /v1/models, /healthz, /readyz, /metrics (Prometheus), /openapi.json. "
        "Requests that arrive within --max-wait-ms share one batch, with early exit per input. SIGTERM stops "
        "accepting connections, answers every request already received and exits 0.",
        example=EXAMPLE,
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="packed model file, or NAME=FILE (name: file stem)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback unless you say otherwise)")
    p.add_argument("--port", type=int, default=8080, help="port (0: any free port, printed at start)")
    p.add_argument("--max-batch", type=int, default=32, help="inputs per batch at most")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill")
    p.add_argument(
        "--min-batch",
        type=int,
        help="a free engine starts a batch as soon as this many inputs wait, without waiting --max-wait-ms "
        "(default: --max-batch; larger values are capped at it)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads of the model (numba pool; BLAS for W1A32 models); default: all cores. A batch uses them "
        "from 256 token rows on, a single sentence runs on one",
    )
    p.add_argument("--api-key-file", help="file holding the API key; requests must then carry it")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-inputs", type=int, default=64, help="inputs in one request")
    limits.add_argument("--max-text-chars", type=int, default=10_000, help="characters in one text")
    limits.add_argument("--max-body-bytes", type=int, default=1 << 20, help="bytes in one request body")
    limits.add_argument("--max-queue", type=int, default=1024, help="inputs waiting per model before 503")
    p.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)


def _model_specs(specs: list[str]) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem, spec
        if not name or "/" in name:
            raise ConfigError(f"{spec!r}: a model name must be non-empty and without '/' (use NAME=FILE)")
        if name in (n for n, _ in out):
            raise ConfigError(f"two models named {name!r}: name them with NAME=FILE")
        out.append((name, Path(path)))
    return out


def _read_api_key(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, IsADirectoryError):
        raise DataError(f"{path}: no such file (--api-key-file)") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text (--api-key-file)") from None
    if not key:
        raise DataError(f"{path}: empty (--api-key-file)")
    return key


def _check_args(args: argparse.Namespace) -> None:
    positive = ("max_batch", "max_inputs", "max_text_chars", "max_body_bytes", "max_queue")
    for name in positive:
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if args.min_batch is not None and args.min_batch < 1:
        raise ConfigError("--min-batch must be at least 1")
    if args.max_wait_ms < 0:
        raise ConfigError("--max-wait-ms must be >= 0")
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port must be in 0..65535")


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that `--port 0` can say which port it got."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from beexformer.serve.app import ServeConfig, create_app, server_state
    from beexformer.serve.model import ServedModel, default_threads
    from beexformer.serve.schema import Limits

    _check_args(args)
    sys.setswitchinterval(_gil_switch_ms() / 1000)
    threads = default_threads() if args.threads is None else args.threads
    apply_threads(threads)  # before the models load: the BLAS sizes its pool at import
    api_key = _read_api_key(args.api_key_file)
    models = [ServedModel(name, path) for name, path in _model_specs(args.models)]
    limits = Limits(args.max_inputs, args.max_text_chars, args.max_body_bytes, args.max_queue)
    serve_config = ServeConfig(args.max_batch, args.max_wait_ms, limits, api_key, threads, args.min_batch)
    app = create_app(models, serve_config)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    state = server_state(app)

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            state.draining = True  # /readyz turns 503 at once; uvicorn stops accepting and drains
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = DrainingServer(config)
    if api_key is None and not ipaddress.ip_address(host).is_loopback:
        print(f"beex serve: warning: listening on {host} without --api-key-file", file=sys.stderr)
    names = ", ".join(m.card.name for m in models)
    print(f"beex serve: listening on http://{_url_host(host)}:{port} (models: {names})", file=sys.stderr, flush=True)
    # uvicorn re-raises the signal that stopped it once it has drained; a no-op handler turns that into exit 0.
    signal.signal(signal.SIGTERM, lambda sig, frame: None)
    server.run(sockets=[sock])
    if not server.started:
        raise BeexError("the server did not start (see the log above)")
    return 0


def _gil_switch_ms() -> float:
    raw = os.environ.get("BEEX_GIL_SWITCH_MS", "")
    try:
        value = float(raw) if raw else GIL_SWITCH_MS
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"BEEX_GIL_SWITCH_MS={raw!r}: a positive number of milliseconds")
    return value


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
