"""Dynamic batching across callers, in the style of Text Embeddings Inference's router.

Why: a forward pass over 64 texts costs far less than 64 passes over one, and an embedding service is called by
many clients at once (ingest workers embedding chunks, retrieval embedding one query each). So every caller's texts
go into one bounded queue, and a single loop packs them into batches for one worker thread:

* **Bounded queue.** The bound is in texts (``max_queue_texts``). A request that would go past it is refused at
  once with ``ResourceExhausted`` (reason ``QUEUE_FULL``): back-pressure the caller can retry with backoff, never a
  wait of unknown length.
* **Greedy token budget.** A batch takes queued texts in arrival order while their token counts (after truncation)
  fit in ``max_batch_tokens`` and there are at most ``max_batch_size`` of them. A lone text over the budget still
  forms a batch of one. Texts of one request may span several batches; texts of many requests share one.
* **Batch keys.** Texts that must not share a forward pass (different prompts) carry different keys; a batch holds
  one key. The oldest queued text picks the key, so no key starves.
* **One worker thread.** ``run_batch`` runs on a single-thread executor, never on the event loop; while it runs,
  the queue fills and the next batch packs more texts. That is the whole scheduling policy: no timers.
* **Cancellation.** A caller cancelled while queued has its texts dropped from the queue (they no longer count
  against the bound and are skipped when dequeued); one cancelled while its batch runs simply gets no result.
  Other callers are unaffected.
* **Shutdown.** ``close()`` fails every pending caller with ``Unavailable``.

Each caller gets its vectors in its own input order with ``queue_ns`` (wall time not spent in its batches'
inference) and ``inference_ns`` (the sum of the forward passes that carried its texts).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from lorag_core.errors import ResourceExhausted, Unavailable
from lorag_core.telemetry import get_logger

log = get_logger(__name__)

#: ``run_batch(texts, key) -> float32 array [len(texts), dimensions]``, called on the worker thread.
BatchFn = Callable[[list[str], Hashable], np.ndarray]
#: ``on_batch(size, tokens, inference_ns)``, called on the event loop after every batch.
OnBatch = Callable[[int, int, int], None]


@dataclass(frozen=True)
class BatchOutput:
    """One caller's vectors, in its input order, and its share of the time."""

    vectors: np.ndarray
    queue_ns: int
    inference_ns: int


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot for metrics and health pages."""

    queue_depth: int
    last_batch_size: int
    last_batch_tokens: int
    batches: int
    texts: int


@dataclass(eq=False)
class _Request:
    future: asyncio.Future[BatchOutput]
    size: int
    submitted_ns: int
    queued: int  # texts of this request still in the queue
    remaining: int  # texts of this request without a vector yet
    vectors: np.ndarray | None = None
    inference_ns: int = 0

    @property
    def live(self) -> bool:
        return not self.future.done()


@dataclass(eq=False, slots=True)
class _Item:
    request: _Request
    index: int
    text: str
    tokens: int
    seq: int


@dataclass
class _Batch:
    key: Hashable
    items: list[_Item] = field(default_factory=list)
    tokens: int = 0


class DynamicBatcher:
    """Packs texts from concurrent callers into token-budgeted batches run on one worker thread.

    ``executor`` lets the owner run other model work (loading, warm-up) on the same single thread; when omitted the
    batcher makes and owns a one-thread executor.
    """

    def __init__(
        self,
        run_batch: BatchFn,
        *,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 256,
        max_queue_texts: int = 4096,
        executor: Executor | None = None,
        on_batch: OnBatch | None = None,
    ) -> None:
        for name, value in (
            ("max_batch_tokens", max_batch_tokens),
            ("max_batch_size", max_batch_size),
            ("max_queue_texts", max_queue_texts),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        self._run_batch = run_batch
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_queue_texts = max_queue_texts
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorag-embed-batch")
        self.on_batch = on_batch

        self._queues: dict[Hashable, deque[_Item]] = {}
        self._depth = 0  # live (not cancelled) queued texts
        self._seq = 0
        self._pending: set[_Request] = set()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

        self._last_batch_size = 0
        self._last_batch_tokens = 0
        self._batches = 0
        self._texts = 0

    # -- stats ---------------------------------------------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        """Texts waiting for a batch (cancelled callers' texts excluded)."""
        return self._depth

    @property
    def last_batch_size(self) -> int:
        return self._last_batch_size

    @property
    def last_batch_tokens(self) -> int:
        return self._last_batch_tokens

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> BatcherStats:
        return BatcherStats(
            queue_depth=self._depth,
            last_batch_size=self._last_batch_size,
            last_batch_tokens=self._last_batch_tokens,
            batches=self._batches,
            texts=self._texts,
        )

    # -- callers -------------------------------------------------------------------------------------------------

    async def submit(self, texts: Sequence[str], token_counts: Sequence[int], key: Hashable = None) -> BatchOutput:
        """Queue ``texts`` (with their token counts after truncation) and wait for their vectors.

        Raises ``ResourceExhausted`` (``QUEUE_FULL``) at once when the queue cannot take them, ``Unavailable`` when
        the batcher is closed or closes while waiting, and whatever ``run_batch`` raised for a batch they were in.
        """
        if len(texts) != len(token_counts):
            raise ValueError(f"{len(texts)} texts but {len(token_counts)} token counts")
        if self._closed:
            raise Unavailable("the embedding batcher is shut down", reason="SHUTTING_DOWN")
        n = len(texts)
        if n == 0:
            return BatchOutput(np.zeros((0, 0), dtype=np.float32), 0, 0)
        if self._depth + n > self.max_queue_texts:
            raise ResourceExhausted(
                f"the embedding queue is full ({self._depth} of {self.max_queue_texts} texts queued, "
                f"{n} more asked); retry with backoff",
                reason="QUEUE_FULL",
                metadata={"max_queue_texts": str(self.max_queue_texts), "queued_texts": str(self._depth)},
            )
        self._ensure_loop()
        assert self._wakeup is not None

        loop = asyncio.get_running_loop()
        request = _Request(
            future=loop.create_future(), size=n, submitted_ns=time.perf_counter_ns(), queued=n, remaining=n
        )
        queue = self._queues.setdefault(key, deque())
        for i, (text, tokens) in enumerate(zip(texts, token_counts, strict=True)):
            queue.append(_Item(request, i, text, max(int(tokens), 1), self._seq))
            self._seq += 1
        self._depth += n
        self._pending.add(request)
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:
            self._drop(request)
            raise

    async def close(self) -> None:
        """Stop batching and fail every waiting caller with ``Unavailable``; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for request in list(self._pending):
            if request.live:
                request.future.set_exception(
                    Unavailable("the embedding service is shutting down", reason="SHUTTING_DOWN")
                )
        self._pending.clear()
        self._queues.clear()
        self._depth = 0
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- the batching loop ---------------------------------------------------------------------------------------

    def _ensure_loop(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="lorag-embed-batching")
            self._task.add_done_callback(self._loop_exited)

    def _loop_exited(self, task: asyncio.Task[None]) -> None:
        """A loop that dies of a bug must not leave callers waiting forever: fail them and refuse new work."""
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        log.error("embedding batching loop stopped", error=repr(exc))
        self._closed = True
        for request in list(self._pending):
            if request.live:
                request.future.set_exception(Unavailable("the embedding batching loop stopped", reason="BATCHER_DOWN"))
        self._pending.clear()
        self._queues.clear()
        self._depth = 0

    def _drop(self, request: _Request) -> None:
        """Forget a request that will get no vectors: its queued texts stop counting and are skipped later."""
        self._depth -= request.queued
        request.queued = 0
        self._pending.discard(request)

    def _next_batch(self) -> _Batch | None:
        """Greedily fill one batch from the queue whose head is oldest."""
        head_key: Hashable = None
        head_seq: int | None = None
        for key, queue in list(self._queues.items()):
            while queue and not queue[0].request.live:
                queue.popleft()  # cancelled or failed callers' leftovers; already uncounted
            if not queue:
                del self._queues[key]
            elif head_seq is None or queue[0].seq < head_seq:
                head_key, head_seq = key, queue[0].seq
        if head_seq is None:
            return None

        queue = self._queues[head_key]
        batch = _Batch(head_key)
        while queue and len(batch.items) < self.max_batch_size:
            item = queue[0]
            if not item.request.live:
                queue.popleft()
                continue
            if batch.items and batch.tokens + item.tokens > self.max_batch_tokens:
                break
            queue.popleft()
            item.request.queued -= 1
            self._depth -= 1
            batch.items.append(item)
            batch.tokens += item.tokens
        return batch

    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = self._next_batch()
            if batch is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            texts = [item.text for item in batch.items]
            started = time.perf_counter_ns()
            try:
                vectors = await loop.run_in_executor(self._executor, self._run_batch, texts, batch.key)
                vectors = np.asarray(vectors, dtype=np.float32)
                if vectors.ndim != 2 or vectors.shape[0] != len(texts):
                    raise RuntimeError(f"run_batch returned shape {vectors.shape} for {len(texts)} texts")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("embedding batch failed", size=len(texts), tokens=batch.tokens, error=repr(exc))
                self._fail(batch, exc)
                continue
            elapsed = time.perf_counter_ns() - started
            self._deliver(batch, vectors, elapsed)
            self._last_batch_size = len(texts)
            self._last_batch_tokens = batch.tokens
            self._batches += 1
            self._texts += len(texts)
            if self.on_batch is not None:
                try:
                    self.on_batch(len(texts), batch.tokens, elapsed)
                except Exception as exc:
                    log.warning("on_batch hook failed", error=repr(exc))

    def _deliver(self, batch: _Batch, vectors: np.ndarray, elapsed_ns: int) -> None:
        now = time.perf_counter_ns()
        touched: dict[_Request, None] = {}
        for row, item in enumerate(batch.items):
            request = item.request
            if not request.live:
                continue
            if request.vectors is None:
                request.vectors = np.empty((request.size, vectors.shape[1]), dtype=np.float32)
            request.vectors[item.index] = vectors[row]
            request.remaining -= 1
            touched[request] = None
        for request in touched:
            request.inference_ns += elapsed_ns
            if request.remaining == 0:
                assert request.vectors is not None
                total = now - request.submitted_ns
                request.future.set_result(
                    BatchOutput(request.vectors, max(total - request.inference_ns, 0), request.inference_ns)
                )
                self._pending.discard(request)

    def _fail(self, batch: _Batch, exc: Exception) -> None:
        for request in {item.request: None for item in batch.items}:
            if request.live:
                request.future.set_exception(exc)
                self._drop(request)


__all__ = ["BatchFn", "BatchOutput", "BatcherStats", "DynamicBatcher", "OnBatch"]
