"""Dynamic micro-batching: requests that arrive within `max_wait` of the oldest waiting one run as one batch.

One `MicroBatcher` per model, one inference thread for the whole server (the cores are the limit; two
batches at once would only fight over them). The event loop never computes: it queues jobs, and the batcher's
task hands a whole batch to the inference thread, where the engine runs it with per-sample early exit (the
batch shrinks as inputs leave). The queue is bounded in *inputs*, so memory is bounded whatever the clients do:
past the limit `submit` raises `QueueFull` at once.

A job whose waiter was cancelled (its client went away) before its batch formed is dropped; once in a batch
it is computed with the others and its result discarded, so the other inputs of the batch are unaffected.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from beexformer.serve.model import InputResult, ServedModel


class QueueFull(Exception):
    """The model's queue holds `limit` inputs already."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"queue full ({limit} inputs waiting)")
        self.limit = limit


@dataclass
class Job:
    texts_a: list[str]
    texts_b: list[str] | None
    threshold: float | None
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return len(self.texts_a)


@dataclass(frozen=True)
class BatchReport:
    """What one batch did, for the metrics."""

    model: str
    n_inputs: int
    exit_layers: list[int]
    seconds: float  # wall time of the batch in the inference thread (tokenizer, engine, results)


class MicroBatcher:
    def __init__(
        self,
        model: ServedModel,
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[BatchReport], None] = lambda report: None,
        on_queue: Callable[[str, int], None] = lambda name, depth: None,
        min_batch: int | None = None,
    ) -> None:
        self.model = model
        self.executor = executor
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.min_batch = max_batch if min_batch is None else max(1, min(min_batch, max_batch))
        self.on_batch, self.on_queue = on_batch, on_queue
        self._pending: deque[Job] = deque()
        self._queued = 0  # inputs in `_pending`
        self._arrival = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self.batches = 0  # batches run so far (tests check that concurrent requests share them)

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{self.model.card.name}")

    async def stop(self) -> None:
        """Finish every queued job (and the batch running), then stop."""
        self._closing = True
        self._arrival.set()
        if self._task is not None:
            await self._task

    async def submit(self, texts_a: list[str], texts_b: list[str] | None, threshold: float | None) -> list[InputResult]:
        if self._queued + len(texts_a) > self.max_queue:
            raise QueueFull(self.max_queue)
        job = Job(texts_a, texts_b, threshold, asyncio.get_running_loop().create_future())
        first = not self._pending
        self._pending.append(job)
        self._set_queued(self._queued + job.size)
        if first or self._queued >= self.min_batch:  # the only two moments the batcher waits for
            self._arrival.set()
        return await job.future

    def _set_queued(self, n: int) -> None:
        self._queued = n
        self.on_queue(self.model.card.name, n)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._arrival.clear()
                await self._arrival.wait()
            await self._fill()
            batch = self._take()
            if not batch:
                continue
            self.batches += 1
            outcomes = await loop.run_in_executor(self.executor, self._compute, batch)
            for job, outcome in zip(batch, outcomes, strict=True):
                if job.future.done():  # cancelled: the client is gone, the batch went on without it
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    async def _fill(self) -> None:
        """Wait until `min_batch` inputs are queued or the oldest job has waited `max_wait_s`."""
        deadline = self._pending[0].arrived + self.max_wait_s
        while self._queued < self.min_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[Job]:
        """Jobs in arrival order up to `max_batch` inputs (a larger job runs alone, in engine batches)."""
        batch: list[Job] = []
        n = 0
        while self._pending and (not batch or n + self._pending[0].size <= self.max_batch):
            job = self._pending.popleft()
            self._set_queued(self._queued - job.size)
            if job.future.cancelled():
                continue
            batch.append(job)
            n += job.size
        return batch

    def _compute(self, batch: list[Job]) -> list[list[InputResult] | BaseException]:
        """In the inference thread: one engine call per exit threshold present in the batch."""
        began = time.perf_counter()
        outcomes: list[list[InputResult] | BaseException] = [[] for _ in batch]
        groups: dict[float | None, list[int]] = {}
        for i, job in enumerate(batch):
            groups.setdefault(job.threshold, []).append(i)
        exit_layers: list[int] = []
        for threshold, members in groups.items():
            jobs = [batch[i] for i in members]
            texts_a = [t for job in jobs for t in job.texts_a]
            texts_b = None
            if any(job.texts_b is not None for job in jobs):
                texts_b = [b for job in jobs for b in (job.texts_b or [None] * job.size)]
            try:
                results = self.model.predict(texts_a, texts_b, threshold, self.max_batch)
            except Exception as err:  # delivered to the waiters of this group; the server goes on
                for i in members:
                    outcomes[i] = err
                continue
            start = 0
            for i, job in zip(members, jobs, strict=True):
                outcomes[i] = results[start : start + job.size]
                start += job.size
            exit_layers.extend(r.exit_layer for r in results)
        seconds = time.perf_counter() - began
        self.on_batch(BatchReport(self.model.card.name, sum(job.size for job in batch), exit_layers, seconds))
        return outcomes
