"""`beex serve` as a real process: start-up errors in one line, no torch in the server, and a SIGTERM drain
that answers every request the server had accepted and exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import serve_helpers

packed_models = serve_helpers.packed_models  # the fixture this module uses
SRC = Path(__file__).resolve().parents[2] / "src"


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def beex(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "beexformer.cli.main", *args]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class ServerProcess:
    """`beex serve ... --port 0`, its stderr collected in the background (the port is read from it)."""

    def __init__(self, *args: str) -> None:
        self.proc = beex("serve", *args, "--port", "0")
        self.lines: list[str] = []
        self.port: int | None = None
        self._found = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                self._found.set()
        self._found.set()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 120) -> None:
        assert self._found.wait(timeout) and self.port, "".join(self.lines)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("/readyz"), timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server not ready:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def queue_depth(server: ServerProcess) -> float:
    text = httpx.get(server.url("/metrics"), timeout=5).text
    match = re.search(r'^beex_queue_depth\{model="sst2"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_sigterm_drains_queued_requests_and_exits_0(packed_models):
    """Requests wait in the batcher (a long --max-wait-ms) when SIGTERM arrives: every one is answered, a
    client that hung up meanwhile changes nothing, new connections are refused, and the exit code is 0."""
    server = ServerProcess(str(packed_models["sst2"]), "--max-wait-ms", "5000", "--max-batch", "64")
    try:
        server.wait_ready()
        texts = [f"a fine film number {i}" for i in range(12)]
        replies: list = [None] * len(texts)

        def send(i: int) -> None:
            try:
                replies[i] = httpx.post(server.url("/v1/models/sst2/predict"), json={"inputs": [texts[i]]}, timeout=60)
            except httpx.HTTPError as err:  # recorded, and the assertion below names it
                replies[i] = err

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        quitter = socket.create_connection(("127.0.0.1", server.port))  # a client that hangs up while queued
        body = json.dumps({"inputs": ["gone"]}).encode()
        quitter.sendall(
            b"POST /v1/models/sst2/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 4
        while queue_depth(server) < len(texts) + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert queue_depth(server) == len(texts) + 1, "requests did not queue in time"
        quitter.close()
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert server.proc.wait(60) == 0, "".join(server.lines)
        for reply in replies:
            assert isinstance(reply, httpx.Response) and reply.status_code == 200, reply
            assert reply.json()["results"][0]["label"] in ("negative", "positive")
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url("/healthz"), timeout=2)
        assert not any("Traceback" in line for line in server.lines), "".join(server.lines)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.beex", None, "missing.beex: no such file"),
        ("junk.beex", b"\x00" * 64, "junk.beex: not a safetensors file"),
        ("truncated.beex", "truncate", "truncated.beex: "),
        (".", None, "not a packed model"),
    ],
    ids=["missing", "junk", "truncated", "directory"],
)
def test_bad_model_file_fails_startup_in_one_line(tmp_path, packed_models, name, content, message):
    path = tmp_path / name
    if content == "truncate":
        path.write_bytes(packed_models["sst2"].read_bytes()[:5000])
    elif content is not None:
        path.write_bytes(content)
    proc = beex("serve", str(path), "--port", "0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("beex serve: error: ") and message in err, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threads", "0"], "--threads 0: must be at least 1"),
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--max-wait-ms", "-1"], "--max-wait-ms must be >= 0"),
        (["--min-batch", "0"], "--min-batch must be at least 1"),
        (["--api-key-file", "/nonexistent/key"], "/nonexistent/key: no such file (--api-key-file)"),
        (["sst2=" + "{model}"], "two models named 'sst2'"),
    ],
    ids=["threads", "max-batch", "max-wait", "min-batch", "api-key-file", "duplicate-name"],
)
def test_bad_arguments_are_one_line_errors(packed_models, capsys, extra, message):
    from beexformer.cli.main import main

    model = str(packed_models["sst2"])
    assert main(["serve", model, *[e.format(model=model) for e in extra], "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("beex serve: error: ") and message in err, err


def test_server_process_never_imports_torch(packed_models):
    """The whole serving path (argument parsing, model loading, the app answering a request, uvicorn) in a
    fresh interpreter: torch is not in sys.modules afterwards."""
    script = f"""
import asyncio, sys
import httpx, uvicorn
from beexformer.cli.main import build_parser
from beexformer.serve.app import ServeConfig, create_app
from beexformer.serve.model import ServedModel

args = build_parser().parse_args(["serve", {str(packed_models["sst2"])!r}])
app = create_app([ServedModel("sst2", args.models[0])], ServeConfig())

async def main():
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post("/v1/models/sst2/predict", json={{"inputs": ["a fine film"]}})
            assert r.status_code == 200, r.text

asyncio.run(main())
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("raw", ["abc", "0", "-1"])
def test_bad_gil_switch_interval_is_a_one_line_error(packed_models, capsys, monkeypatch, raw):
    from beexformer.cli.main import main

    monkeypatch.setenv("BEEX_GIL_SWITCH_MS", raw)
    assert main(["serve", str(packed_models["sst2"]), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"BEEX_GIL_SWITCH_MS={raw!r}: a positive number" in err, err


def test_gil_switch_interval_default_and_override(monkeypatch):
    from beexformer.cli.serve import _gil_switch_ms

    monkeypatch.delenv("BEEX_GIL_SWITCH_MS", raising=False)
    assert _gil_switch_ms() == 0.5  # the server's default: a tenth of Python's 5 ms
    monkeypatch.setenv("BEEX_GIL_SWITCH_MS", "5")
    assert _gil_switch_ms() == 5.0
