"""The micro-batcher on its own, with a stand-in model whose batches we can hold: which jobs share a batch,
and what a cancelled waiter (a client that went away) does to a batch that is already running."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from beexformer.serve.batching import BatchReport, MicroBatcher, QueueFull
from beexformer.serve.model import InputResult


class HeldModel:
    """Answers each text with its length; every batch waits for `release` before it computes."""

    def __init__(self) -> None:
        self.card = SimpleNamespace(name="held")
        self.calls: list[tuple[list[str], float | None]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def predict(self, texts_a, texts_b, threshold, batch_size):
        self.calls.append((list(texts_a), threshold))
        self.started.set()
        assert self.release.wait(10)
        return [InputResult(None, float(len(t)), None, 1) for t in texts_a]


def test_running_batch_finishes_for_the_others_when_one_waiter_is_cancelled():
    model = HeldModel()
    reports: list[BatchReport] = []

    async def go():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch=8, max_wait_s=0.2, max_queue=16, on_batch=reports.append)
            batcher.start()
            tasks = [asyncio.create_task(batcher.submit([t], None, None)) for t in ("a", "bb", "ccc")]
            await asyncio.get_running_loop().run_in_executor(None, model.started.wait, 10)
            tasks[1].cancel()  # the batch is running: it must finish for the other two
            await asyncio.sleep(0.2)  # the batch's reported time covers the whole of it
            model.release.set()
            done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
            later = await asyncio.wait_for(batcher.submit(["dddd"], None, None), 10)  # the batcher goes on
            await batcher.stop()
            return done, later

    done, later = asyncio.run(go())
    assert done[0][0].score == 1.0 and done[2][0].score == 3.0
    assert isinstance(done[1], asyncio.CancelledError)
    assert later[0].score == 4.0
    assert model.calls[0] == (["a", "bb", "ccc"], None)  # one batch, the cancelled input computed with it
    assert [r.n_inputs for r in reports] == [3, 1]
    assert reports[0].seconds >= 0.2


def test_batches_split_at_max_batch_and_by_threshold_and_queue_is_bounded():
    model = HeldModel()
    model.release.set()

    async def go():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch=4, max_wait_s=0.2, max_queue=6)
            batcher.start()
            jobs = [batcher.submit([f"t{i}"], None, 0.1 if i % 2 else None) for i in range(6)]
            tasks = [asyncio.create_task(job) for job in jobs]
            await asyncio.sleep(0)
            try:
                await batcher.submit(["overflow"], None, None)
                refused = False
            except QueueFull:
                refused = True
            results = await asyncio.gather(*tasks)
            await batcher.stop()
            return results, refused, batcher.batches

    results, refused, batches = asyncio.run(go())
    assert refused  # 6 inputs queued, limit 6
    assert [r[0].score for r in results] == [2.0] * 6
    assert batches == 2  # 4 inputs, then the other 2
    # Within the first batch, each threshold is its own engine call, in arrival order.
    assert model.calls[:2] == [(["t0", "t2"], None), (["t1", "t3"], 0.1)]
    assert model.calls[2:] == [(["t4"], None), (["t5"], 0.1)]


def test_a_free_engine_starts_at_min_batch_without_waiting_for_max_wait():
    model = HeldModel()
    model.release.set()

    async def go():
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(model, pool, max_batch=32, max_wait_s=60, max_queue=64, min_batch=4)
            batcher.start()
            first = [asyncio.create_task(batcher.submit([f"t{i}"], None, None)) for i in range(3)]
            await asyncio.sleep(0.3)
            calls_before = len(model.calls)  # 3 < min_batch: still waiting (max_wait is a minute)
            last = asyncio.create_task(batcher.submit(["t3"], None, None))
            results = await asyncio.wait_for(asyncio.gather(*first, last), 10)  # far less than max_wait
            await batcher.stop()
            return calls_before, results, batcher.batches

    calls_before, results, batches = asyncio.run(go())
    assert calls_before == 0
    assert [r[0].score for r in results] == [2.0] * 4
    assert batches == 1 and model.calls == [(["t0", "t1", "t2", "t3"], None)]
