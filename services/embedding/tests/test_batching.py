"""DynamicBatcher on its own: packing, budgets, back-pressure, cancellation, failures and shutdown.

The batch function is a real workload (a deterministic text → vector function) run on the batcher's worker thread;
a gate lets a test hold the worker busy so that the queue state it checks is not a matter of timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Hashable, Iterator

import numpy as np
import pytest

from lorag_core.errors import ResourceExhausted, Unavailable
from lorag_embedding.batching import DynamicBatcher

pytestmark = pytest.mark.unit

DIM = 8


def vector_of(text: str) -> np.ndarray:
    """A deterministic unit vector per text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class Workload:
    """Embeds on the worker thread, records every batch, and can be held shut by a gate."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[tuple[Hashable, list[str]]] = []
        self.running = threading.Event()
        self.delay_s = delay_s

    def __call__(self, texts: list[str], key: Hashable) -> np.ndarray:
        self.running.set()
        self.gate.wait(timeout=30)
        self.batches.append((key, list(texts)))
        if any(t == "boom" for t in texts):
            raise RuntimeError("the model failed on this batch")
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.stack([vector_of(t) for t in texts])

    def hold(self) -> None:
        self.gate.clear()
        self.running.clear()


@pytest.fixture
def workload() -> Iterator[Workload]:
    w = Workload()
    yield w
    w.gate.set()  # never leave a worker thread blocked


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


async def occupy_worker(batcher: DynamicBatcher, workload: Workload) -> asyncio.Task:
    """Hold the worker on a one-text batch, so what is submitted next stays queued."""
    workload.hold()
    task = asyncio.ensure_future(batcher.submit(["blocker"], [1]))
    await asyncio.get_running_loop().run_in_executor(None, workload.running.wait, 5)
    await wait_for(lambda: batcher.queue_depth == 0)
    return task


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([vector_of(t) for t in texts])


async def test_callers_get_their_own_vectors_in_order(workload: Workload) -> None:
    batcher = DynamicBatcher(workload)
    requests = [[f"caller {c} text {i}" for i in range(c % 4 + 1)] for c in range(20)]
    outs = await asyncio.gather(*(batcher.submit(texts, [3] * len(texts)) for texts in requests))
    for texts, out in zip(requests, outs, strict=True):
        np.testing.assert_allclose(out.vectors, expected(texts))
        assert out.vectors.dtype == np.float32
    await batcher.close()


async def test_texts_of_many_callers_share_a_batch(workload: Workload) -> None:
    batcher = DynamicBatcher(workload)
    blocker = await occupy_worker(batcher, workload)
    a = asyncio.ensure_future(batcher.submit(["a1", "a2", "a3"], [2, 2, 2]))
    b = asyncio.ensure_future(batcher.submit(["b1", "b2"], [2, 2]))
    c = asyncio.ensure_future(batcher.submit(["c1"], [2]))
    await wait_for(lambda: batcher.queue_depth == 6)
    workload.gate.set()
    out_a, out_b, out_c, _ = await asyncio.gather(a, b, c, blocker)
    assert [texts for _, texts in workload.batches] == [["blocker"], ["a1", "a2", "a3", "b1", "b2", "c1"]]
    np.testing.assert_allclose(out_a.vectors, expected(["a1", "a2", "a3"]))
    np.testing.assert_allclose(out_b.vectors, expected(["b1", "b2"]))
    np.testing.assert_allclose(out_c.vectors, expected(["c1"]))
    assert batcher.last_batch_size == 6 and batcher.last_batch_tokens == 12
    await batcher.close()


async def test_token_budget_and_batch_size_bound_each_batch(workload: Workload) -> None:
    batcher = DynamicBatcher(workload, max_batch_tokens=10, max_batch_size=3)
    blocker = await occupy_worker(batcher, workload)
    texts = ["t0", "t1", "t2", "huge", "s0", "s1", "s2", "s3"]
    tokens = [4, 4, 4, 50, 1, 1, 1, 1]
    task = asyncio.ensure_future(batcher.submit(texts, tokens))
    await wait_for(lambda: batcher.queue_depth == len(texts))
    workload.gate.set()
    out = (await asyncio.gather(task, blocker))[0]
    # Greedy in arrival order: 4+4 fits and 4 more would not; a lone text over budget is a batch of one;
    # at most three texts per batch.
    assert [texts for _, texts in workload.batches[1:]] == [["t0", "t1"], ["t2"], ["huge"], ["s0", "s1", "s2"], ["s3"]]
    np.testing.assert_allclose(out.vectors, expected(texts))
    await batcher.close()


async def test_full_queue_refuses_at_once(workload: Workload) -> None:
    batcher = DynamicBatcher(workload, max_queue_texts=4)
    blocker = await occupy_worker(batcher, workload)
    queued = asyncio.ensure_future(batcher.submit(["q1", "q2", "q3"], [1, 1, 1]))
    await wait_for(lambda: batcher.queue_depth == 3)

    started = time.perf_counter()
    with pytest.raises(ResourceExhausted) as refused:
        await batcher.submit(["x1", "x2"], [1, 1])
    assert time.perf_counter() - started < 0.5  # refused, not queued behind the held worker
    assert refused.value.reason == "QUEUE_FULL"
    assert refused.value.metadata["max_queue_texts"] == "4"
    assert batcher.queue_depth == 3

    fits = asyncio.ensure_future(batcher.submit(["y1"], [1]))  # exactly at the bound is fine
    await wait_for(lambda: batcher.queue_depth == 4)
    workload.gate.set()
    await asyncio.gather(queued, fits, blocker)
    assert batcher.queue_depth == 0
    await batcher.close()


async def test_cancelled_caller_leaves_the_queue_and_others_are_served(workload: Workload) -> None:
    batcher = DynamicBatcher(workload)
    blocker = await occupy_worker(batcher, workload)
    before = asyncio.ensure_future(batcher.submit(["before"], [1]))
    doomed = asyncio.ensure_future(batcher.submit(["doomed 1", "doomed 2"], [1, 1]))
    after = asyncio.ensure_future(batcher.submit(["after"], [1]))
    await wait_for(lambda: batcher.queue_depth == 4)

    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batcher.queue_depth == 2  # its texts no longer count against the bound

    workload.gate.set()
    out_before, out_after, _ = await asyncio.gather(before, after, blocker)
    np.testing.assert_allclose(out_before.vectors, expected(["before"]))
    np.testing.assert_allclose(out_after.vectors, expected(["after"]))
    assert all("doomed" not in text for _, texts in workload.batches for text in texts)
    await batcher.close()


async def test_caller_cancelled_during_inference_does_not_disturb_its_batch_mates(workload: Workload) -> None:
    batcher = DynamicBatcher(workload)
    workload.hold()
    leaving = asyncio.ensure_future(batcher.submit(["leaving"], [1]))
    staying = asyncio.ensure_future(batcher.submit(["staying"], [1]))
    await asyncio.get_running_loop().run_in_executor(None, workload.running.wait, 5)
    leaving.cancel()
    workload.gate.set()
    out = await staying
    np.testing.assert_allclose(out.vectors, expected(["staying"]))
    assert leaving.cancelled()
    assert batcher.queue_depth == 0
    await batcher.close()


async def test_a_failed_batch_fails_its_callers_only(workload: Workload) -> None:
    batcher = DynamicBatcher(workload)
    blocker = await occupy_worker(batcher, workload)
    bad = asyncio.ensure_future(batcher.submit(["fine", "boom"], [1, 1]))
    await wait_for(lambda: batcher.queue_depth == 2)
    workload.gate.set()
    await blocker
    with pytest.raises(RuntimeError, match="model failed"):
        await bad
    good = await batcher.submit(["fine again"], [1])  # the loop keeps serving
    np.testing.assert_allclose(good.vectors, expected(["fine again"]))
    await batcher.close()


async def test_request_split_over_batches_fails_whole_when_one_part_fails(workload: Workload) -> None:
    batcher = DynamicBatcher(workload, max_batch_size=2)
    with pytest.raises(RuntimeError):
        await batcher.submit(["a", "b", "boom", "c", "d", "e"], [1] * 6)
    assert batcher.queue_depth == 0  # the rest of the failed request was dropped
    out = await batcher.submit(["z"], [1])
    np.testing.assert_allclose(out.vectors, expected(["z"]))
    await batcher.close()


async def test_keys_never_share_a_batch_and_the_oldest_goes_first(workload: Workload) -> None:
    batcher = DynamicBatcher(workload)
    blocker = await occupy_worker(batcher, workload)
    q1 = asyncio.ensure_future(batcher.submit(["q1"], [1], key="query: "))
    d1 = asyncio.ensure_future(batcher.submit(["d1"], [1], key=""))
    q2 = asyncio.ensure_future(batcher.submit(["q2"], [1], key="query: "))
    await wait_for(lambda: batcher.queue_depth == 3)
    workload.gate.set()
    await asyncio.gather(q1, d1, q2, blocker)
    assert workload.batches[1:] == [("query: ", ["q1", "q2"]), ("", ["d1"])]
    await batcher.close()


async def test_timing_and_batch_hook(workload: Workload) -> None:
    workload.delay_s = 0.02
    seen: list[tuple[int, int, int]] = []

    def on_batch(size: int, tokens: int, inference_ns: int) -> None:
        seen.append((size, tokens, inference_ns))
        raise ValueError("a broken metrics hook must not stop batching")

    batcher = DynamicBatcher(workload, on_batch=on_batch)
    out = await batcher.submit(["one", "two"], [3, 4])
    assert out.inference_ns >= 20_000_000
    assert out.queue_ns >= 0
    out2 = await batcher.submit(["three"], [5])
    assert out2.inference_ns >= 20_000_000
    assert [(s, t) for s, t, _ in seen] == [(2, 7), (1, 5)]
    assert all(ns >= 20_000_000 for _, _, ns in seen)
    stats = batcher.stats()
    assert (stats.batches, stats.texts, stats.last_batch_size, stats.last_batch_tokens) == (2, 3, 1, 5)
    await batcher.close()


async def test_queue_time_counts_the_wait_for_earlier_batches(workload: Workload) -> None:
    batcher = DynamicBatcher(workload)
    blocker = await occupy_worker(batcher, workload)
    waiting = asyncio.ensure_future(batcher.submit(["patient"], [1]))
    await asyncio.sleep(0.05)
    workload.gate.set()
    out, _ = await asyncio.gather(waiting, blocker)
    assert out.queue_ns >= 40_000_000
    await batcher.close()


async def test_close_fails_waiting_callers_with_unavailable(workload: Workload) -> None:
    batcher = DynamicBatcher(workload)
    blocker = await occupy_worker(batcher, workload)
    queued = asyncio.ensure_future(batcher.submit(["queued"], [1]))
    await wait_for(lambda: batcher.queue_depth == 1)
    await batcher.close()
    for task in (blocker, queued):  # in flight and queued alike
        with pytest.raises(Unavailable):
            await task
    with pytest.raises(Unavailable):
        await batcher.submit(["late"], [1])
    assert batcher.closed
    workload.gate.set()


async def test_bad_arguments(workload: Workload) -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(workload, max_batch_tokens=0)
    batcher = DynamicBatcher(workload)
    with pytest.raises(ValueError):
        await batcher.submit(["a", "b"], [1])
    await batcher.close()
