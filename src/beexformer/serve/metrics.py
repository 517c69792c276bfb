"""Prometheus metrics of the server (`GET /metrics`), in a registry of its own per app (no global state)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from beexformer.serve.batching import BatchReport

# Seconds: a batched request on the packed runtime takes milliseconds; the tail goes to seconds under overload.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
BATCH_SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class ServerMetrics:
    def __init__(self, max_blocks: int) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "beex_request_duration_seconds",
            "Time from request to response, by route and status code",
            ["route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.responses = Counter("beex_responses", "Responses by status code", ["status"], registry=self.registry)
        self.batch_size = Histogram(
            "beex_batch_size", "Inputs per engine batch", ["model"], buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.batch_seconds = Histogram(
            "beex_batch_duration_seconds",
            "Time the inference thread spent on a batch (their sum over wall time: how busy the engine is)",
            ["model"],
            buckets=BATCH_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.exit_layer = Histogram(
            "beex_exit_layer",
            "Block each input left at (1-based)",
            ["model"],
            buckets=tuple(range(1, max_blocks + 1)),
            registry=self.registry,
        )
        self.queue_depth = Gauge("beex_queue_depth", "Inputs waiting for a batch", ["model"], registry=self.registry)
        # The labelled children, looked up once: `labels()` (a lock and a dict lookup on tuples of strings) was the
        # metrics' largest cost per request in a profile of the event loop under load.
        self._request_children: dict[tuple[str, int], tuple] = {}
        self._queue_children: dict[str, Gauge] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        children = self._request_children.get((route, status))
        if children is None:  # bounded: route templates x status codes
            children = (self.latency.labels(route, str(status)), self.responses.labels(str(status)))
            self._request_children[route, status] = children
        children[0].observe(seconds)
        children[1].inc()

    def observe_batch(self, report: BatchReport) -> None:
        self.batch_size.labels(report.model).observe(report.n_inputs)
        self.batch_seconds.labels(report.model).observe(report.seconds)
        hist = self.exit_layer.labels(report.model)
        for layer in report.exit_layers:
            hist.observe(layer)

    def set_queue_depth(self, model: str, depth: int) -> None:
        child = self._queue_children.get(model)
        if child is None:
            child = self._queue_children[model] = self.queue_depth.labels(model)
        child.set(depth)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
