"""Load test of `beex serve`: dynamic batching (--max-batch 32) against one input per batch (--max-batch 1),
driven in the same run by the same bounded client on the loopback interface.

    python benchmarks/serve_load.py MODEL.beex [--data-dir GLUE] [--requests 3000] [--time-limit 60]

Two servers start on free loopback ports (`beex serve MODEL --port 0 --max-batch B`), one per --max-batches
value; for each concurrency (1, 8, 32, 64) the client drives each server in turn (interleaved, so drift of a
shared machine hits both alike). The client is asynchronous and bounded: `concurrency` workers, each with one
keep-alive connection and one request in flight, send SST-2 dev sentences (one per request) until
--requests have been sent or --time-limit has passed; then it waits --grace seconds for the requests in
flight and counts the rest as unanswered. It is a minimal HTTP/1.1 client over asyncio streams (uvloop when
installed) rather than httpx because it shares the two cores with the server: the less it costs, the more the
numbers describe the server.

Reported per server and concurrency: throughput (answered requests per second of wall time), p50/p95/p99
latency, errors (a status other than 200, a body without one result, or a broken connection), unanswered
requests, and from the server's own /metrics the mean batch size and the exit layers of the inputs. At the
end each server gets SIGTERM and must exit 0. Writes benchmarks/results/serve_load.json and serve_load.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="packed model file (beex export RUN --out FILE), an SST-2 model")
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR", str(HERE.parent.parent / "shared/data/glue")))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--max-batches", type=int, nargs="+", default=[32, 1], help="first one is the batched server")
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--min-batch", type=int, help="--min-batch of the servers (default: the server's default)")
    p.add_argument("--threads", type=int, help="--threads of the servers (default: the server's default)")
    p.add_argument("--requests", type=int, default=3000, help="requests per server and concurrency")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds of sending per server and concurrency")
    p.add_argument("--grace", type=float, default=10.0, help="seconds to wait for requests in flight")
    p.add_argument("--warmup", type=int, default=200, help="requests before each measurement (not counted)")
    p.add_argument("--out", default=str(HERE / "results" / "serve_load.json"))
    return p.parse_args()


# ----------------------------------------------------------------------------------------------------------
# the server


class Server:
    """`beex serve MODEL --port 0 ...` in a child process; the port is read from its start-up line."""

    def __init__(self, model: str, max_batch: int, shared: list[str]) -> None:
        cmd = [sys.executable, "-m", "beexformer.cli.main", "serve", model, "--port", "0", "--log-level", "warning"]
        cmd += ["--max-batch", str(max_batch), *shared]
        env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        self.max_batch = max_batch
        self.command = " ".join(cmd[1:])
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.port = 0
        found = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.log.append(line)
                match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    self.port = int(match.group(1))
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(300) or not self.port:
            raise SystemExit("server did not start:\n" + "".join(self.log))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("/readyz"), timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("server not ready:\n" + "".join(self.log))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) of the server process so far; Linux /proc, else 0."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self) -> str:
        return httpx.get(self.url("/metrics"), timeout=30).text

    def stop(self) -> int:
        """SIGTERM and the exit code (the server drains and must exit 0)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


@dataclass(frozen=True)
class BatchStats:
    batches: float
    inputs: float
    busy_seconds: float  # the inference thread's time on batches
    exit_sum: float
    exit_count: float
    exit_buckets: dict[str, float]  # cumulative counts by upper bound


def batch_stats(text: str) -> BatchStats:
    def value(name: str) -> float:
        match = re.search(rf"^{name}\{{model=\"[^\"]+\"\}} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    buckets = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^beex_exit_layer_bucket\{le="([^"]+)",model="[^"]+"\} (\S+)$', text, re.MULTILINE)
    }
    return BatchStats(
        value("beex_batch_size_count"),
        value("beex_batch_size_sum"),
        value("beex_batch_duration_seconds_sum"),
        value("beex_exit_layer_sum"),
        value("beex_exit_layer_count"),
        buckets,
    )


# ----------------------------------------------------------------------------------------------------------
# the client


@dataclass
class LoadResult:
    concurrency: int
    max_batch: int
    sent: int = 0
    answered: int = 0
    errors: int = 0
    unanswered: int = 0
    seconds: float = 0.0
    throughput_rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    mean_batch_size: float = 0.0
    engine_busy: float = 0.0  # fraction of the wall time the inference thread spent on batches
    engine_ms_per_input: float = 0.0  # the inference thread's time per input
    mean_exit_layer: float = 0.0
    exit_layers: dict[str, int] = field(default_factory=dict)
    server_cpu_ms_per_request: float = 0.0  # user + system time of the server process over answered requests
    client_cpu_ms_per_request: float = 0.0
    error_examples: list[str] = field(default_factory=list)


def request_bytes(model: str, text: str) -> bytes:
    body = json.dumps({"inputs": [text]}).encode()
    head = (
        f"POST /v1/models/{model}/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> tuple[int, bytes]:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(port: int, payloads: list[bytes], concurrency: int, n: int, time_limit: float, grace: float):
    """(latencies of answered requests, errors, error examples, sent, wall seconds)."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    stop_at = time.perf_counter() + time_limit

    async def worker() -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent < n and time.perf_counter() < stop_at:
                payload = payloads[sent % len(payloads)]
                sent += 1
                start = time.perf_counter()
                try:
                    status, body = await exchange(reader, writer, payload)
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    errors.append(f"connection: {err!r}")
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                if status != 200 or len(json.loads(body).get("results", [])) != 1:
                    errors.append(f"{status}: {body[:200]!r}")
                    continue
                latencies.append(time.perf_counter() - start)
        finally:
            writer.close()

    start = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    # Workers stop sending at the time limit; what is still in flight after the grace period is unanswered.
    await asyncio.wait(tasks, timeout=time_limit + grace)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, errors, sent, time.perf_counter() - start


def run_async(coro):
    """uvloop when installed (a cheaper client leaves more of the shared cores to the server)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_level(server: Server, payloads: list[bytes], concurrency: int, args) -> LoadResult:
    run_async(drive(server.port, payloads, concurrency, args.warmup, args.time_limit, args.grace))
    before = batch_stats(server.metrics())
    cpu_server, cpu_client = server.cpu_seconds(), time.process_time()
    latencies, errors, sent, seconds = run_async(
        drive(server.port, payloads, concurrency, args.requests, args.time_limit, args.grace)
    )
    cpu_server, cpu_client = server.cpu_seconds() - cpu_server, time.process_time() - cpu_client
    after = batch_stats(server.metrics())
    result = LoadResult(concurrency, server.max_batch, sent=sent, answered=len(latencies), errors=len(errors))
    result.unanswered = sent - len(latencies) - len(errors)
    result.error_examples = errors[:5]
    result.seconds = seconds
    result.throughput_rps = len(latencies) / seconds
    result.server_cpu_ms_per_request = 1000 * cpu_server / max(1, len(latencies))
    result.client_cpu_ms_per_request = 1000 * cpu_client / max(1, len(latencies))
    if latencies:
        ms = np.array(latencies) * 1000
        result.latency_ms = {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)} | {"max": float(ms.max())}
    batches = after.batches - before.batches
    result.mean_batch_size = (after.inputs - before.inputs) / batches if batches else 0.0
    result.engine_busy = (after.busy_seconds - before.busy_seconds) / seconds
    inputs = after.inputs - before.inputs
    result.engine_ms_per_input = 1000 * (after.busy_seconds - before.busy_seconds) / inputs if inputs else 0.0
    exits = after.exit_count - before.exit_count
    result.mean_exit_layer = (after.exit_sum - before.exit_sum) / exits if exits else 0.0
    cumulative = {k: after.exit_buckets[k] - before.exit_buckets.get(k, 0.0) for k in after.exit_buckets}
    previous = 0.0
    for bound in sorted((k for k in cumulative if k != "+Inf"), key=float):
        result.exit_layers[str(int(float(bound)))] = int(cumulative[bound] - previous)
        previous = cumulative[bound]
    return result


# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineCeiling:
    """The engine alone, in this process, on the sentences the client sends: what batching can give at most."""

    sentences: int
    batch: int  # the batched server's --max-batch
    ms_per_sentence: dict[int, float]  # wall time, by batch size
    cpu_ms_per_sentence: dict[int, float]  # CPU time of the process (all threads), by batch size

    @property
    def ratio(self) -> float:
        return self.ms_per_sentence[1] / self.ms_per_sentence[self.batch]


def engine_ceiling(model: str, sentences: list[str], batch: int, threads: int | None, reps: int = 3) -> EngineCeiling:
    """Median over `reps` interleaved repetitions of `ServedModel.predict` (the call the server's inference
    thread makes) at batch 1, 8 and `batch`, same sentences, same threads."""
    sys.path.insert(0, str(SRC))
    from beexformer.cli.common import apply_threads
    from beexformer.serve.model import ServedModel, default_threads

    apply_threads(threads or default_threads())  # the servers' threads
    served = ServedModel("ceiling", model)
    texts = sentences[: 8 * batch]
    served.predict(texts[:batch], None, None, batch)  # compile / load the kernels
    sizes = sorted({1, min(8, batch), batch})
    wall: dict[int, list[float]] = {size: [] for size in sizes}
    cpu: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(reps):
        for size in sizes:
            start, start_cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(texts), size):
                served.predict(texts[i : i + size], None, None, size)
            wall[size].append((time.perf_counter() - start) / len(texts) * 1000)
            cpu[size].append((time.process_time() - start_cpu) / len(texts) * 1000)
    return EngineCeiling(
        len(texts),
        batch,
        {size: float(np.median(v)) for size, v in wall.items()},
        {size: float(np.median(v)) for size, v in cpu.items()},
    )


def engine_line(c: EngineCeiling) -> str:
    sizes = ", ".join(
        f"batch {b}: {c.ms_per_sentence[b]:.3f} ms per sentence ({c.cpu_ms_per_sentence[b]:.3f} ms CPU)"
        for b in sorted(c.ms_per_sentence)
    )
    return f"{sizes}; batch 1 / batch {c.batch}: {c.ratio:.2f}x"


def sst2_sentences(data_dir: str) -> list[str]:
    path = Path(data_dir) / "SST-2" / "dev.tsv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (pass --data-dir or set GLUE_DIR)")
    with path.open(encoding="utf-8") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def markdown(report: dict) -> str:
    batched, single = report["max_batches"][0], report["max_batches"][1]
    lines = [
        f"`{report['command']}`",
        "",
        f"Model: {report['model']['name']} ({report['model']['task']}, W{report['model']['bits']['weights']}"
        f"A{report['model']['bits']['activations']}); {report['cpu']}; {report['note']}",
        "",
        "| concurrency | max batch | req/s | p50 ms | p95 ms | p99 ms | mean batch | engine busy | engine ms/input | "
        "mean exit layer | errors | unanswered | CPU ms/request: server | client |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['concurrency']} | {r['max_batch']} | {r['throughput_rps']:.0f} | {lat.get('p50', 0):.1f} | "
            f"{lat.get('p95', 0):.1f} | {lat.get('p99', 0):.1f} | {r['mean_batch_size']:.1f} | "
            f"{100 * r['engine_busy']:.0f} % | {r['engine_ms_per_input']:.3f} | {r['mean_exit_layer']:.2f} | "
            f"{r['errors']} | {r['unanswered']} | {r['server_cpu_ms_per_request']:.2f} | "
            f"{r['client_cpu_ms_per_request']:.3f} |"
        )
    lines += ["", f"| concurrency | throughput, max batch {batched} / max batch {single} |", "|---|---|"]
    lines += [f"| {c} | {ratio:.2f}x |" for c, ratio in report["throughput_ratio"].items()]
    e = report["engine_alone"]
    lines += [
        "",
        f"Engine alone (`ServedModel.predict` in the benchmark process, {e['sentences']} of the same sentences, "
        f"the servers' threads): {e['line']}; the engine's own gain from batching (the server also saves its "
        "per-batch costs: hand-off to the inference thread, tokenizer and engine calls).",
    ]
    lines += ["", "Goals: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in report["goals"].items())]
    lines += [f"Servers exited with {report['exit_codes']} after SIGTERM."]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    sentences = sst2_sentences(args.data_dir)
    ceiling = engine_ceiling(args.model, sentences, args.max_batches[0], args.threads)
    print(f"engine alone: {engine_line(ceiling)}", flush=True)
    # Every server gets the same options but --max-batch.
    shared = ["--max-wait-ms", str(args.max_wait_ms)]
    shared += ["--min-batch", str(args.min_batch)] if args.min_batch else []
    shared += ["--threads", str(args.threads)] if args.threads else []
    servers = [Server(args.model, b, shared) for b in args.max_batches]
    try:
        card = httpx.get(servers[0].url("/v1/models"), timeout=30).json()["models"][0]
        payloads = [request_bytes(card["name"], s) for s in sentences]
        results: list[LoadResult] = []
        for concurrency in args.concurrency:
            for server in servers:
                r = run_level(server, payloads, concurrency, args)
                print(
                    f"concurrency {concurrency:3d}, max batch {server.max_batch:3d}: {r.throughput_rps:7.0f} req/s, "
                    f"p50 {r.latency_ms.get('p50', 0):6.1f} ms, p99 {r.latency_ms.get('p99', 0):6.1f} ms, "
                    f"mean batch {r.mean_batch_size:5.1f}, engine busy {100 * r.engine_busy:3.0f} %, "
                    f"exit layer {r.mean_exit_layer:.2f}, "
                    f"errors {r.errors}, unanswered {r.unanswered}",
                    flush=True,
                )
                results.append(r)
    finally:
        exit_codes = [server.stop() for server in servers]
    batched, single = args.max_batches[0], args.max_batches[1]
    by = {(r.concurrency, r.max_batch): r for r in results}
    ratio = {c: by[c, batched].throughput_rps / by[c, single].throughput_rps for c in args.concurrency}
    at32 = by.get((32, batched))
    goals = {
        "zero errors and unanswered requests at every concurrency": all(
            r.errors == 0 and r.unanswered == 0 for r in results
        ),
        f"throughput at concurrency 32 >= 4x that of max batch {single}": ratio.get(32, 0) >= 4,
        "p99 at concurrency 32 under 50 ms": bool(at32 and at32.latency_ms.get("p99", 1e9) < 50),
        "servers exit 0 on SIGTERM": all(code == 0 for code in exit_codes),
    }
    report = {
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "servers": [s.command for s in servers],
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "note": "client and servers share the machine's cores; other sessions' editing may have been running",
        "model": card,
        "max_batches": args.max_batches,
        "max_wait_ms": args.max_wait_ms,
        "min_batch": args.min_batch,
        "threads": args.threads,
        "requests_per_level": args.requests,
        "time_limit_s": args.time_limit,
        "engine_alone": asdict(ceiling) | {"ratio": ceiling.ratio, "line": engine_line(ceiling)},
        "results": [asdict(r) for r in results],
        "throughput_ratio": {str(c): v for c, v in ratio.items()},
        "goals": goals,
        "exit_codes": exit_codes,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
