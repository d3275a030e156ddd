"""The two load models, each driving one async ``call(i)`` and recording every completed call.

Fixed rate (open model): request k is *due* at ``t0 + k / rate`` whatever happened to earlier requests, and its
latency is measured from that due time, not from when it was actually sent. A stalled server therefore shows up
as the latency its users would see, instead of silently slowing the load generator down (coordinated omission,
as wrk2 and HdrHistogram's authors describe it). At most ``max_in_flight`` calls are outstanding; requests that
wait for a slot keep their due time, so that wait counts too.

Fixed concurrency (closed model): C workers each send, wait for the answer, and send again; latency runs from
the actual send. This finds the throughput the service sustains at that concurrency.

Requests due (rate) or started (concurrency) during ``warmup`` run but are not recorded. The measured window is
``duration`` seconds after the warmup; calls still in flight at its end are awaited and recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lorag_client import LoragError

# call(i) sends request i; it returns the loop time of the first response message of a stream, else None.
Call = Callable[[int], Awaitable[float | None]]


@dataclass(frozen=True)
class Sample:
    """One completed call, times in seconds from the start of the measured window."""

    start: float  # The due time (rate) or the send time (concurrency).
    latency: float  # Until the call completed (a stream: until it ended).
    code: str  # "OK" or the gRPC status code name.
    first_message: float | None = None  # Until the first response message of a stream.

    @property
    def end(self) -> float:
        return self.start + self.latency


@dataclass
class RunResult:
    samples: list[Sample] = field(default_factory=list)
    duration: float = 0.0  # The configured measured window.
    elapsed: float = 0.0  # From the window's start to the last recorded completion (at least duration).
    warmup_calls: int = 0


def _code(error: BaseException) -> str:
    """The gRPC code name of a failed call (the SDK raises a LoragError for each), else CLIENT_<its type>."""
    if isinstance(error, LoragError):
        return error.code.name
    return f"CLIENT_{type(error).__name__}"


async def _timed(call: Call, i: int) -> tuple[float, str, float | None]:
    """(completion time, code, first message time) of call i."""
    loop = asyncio.get_running_loop()
    try:
        first = await call(i)
        code = "OK"
    except asyncio.CancelledError:
        raise
    except Exception as error:  # every failure is a result to count, never a crash of the run
        first, code = None, _code(error)
    done = loop.time()
    return done, code, first


def _sample(start: float, done: float, code: str, first: float | None, window: float) -> Sample:
    return Sample(start - window, done - start, code, None if first is None else first - start)


def _finish(result: RunResult, window: float, end: float) -> RunResult:
    last = max((s.end for s in result.samples), default=0.0)
    result.elapsed = max(last, end - window, 1e-9)
    return result


async def run_rate(
    call: Call, rate: float, duration: float, *, warmup: float = 0.0, max_in_flight: int = 256
) -> RunResult:
    """Open model: request k due at t0 + k/rate; latency from the due time; at most max_in_flight outstanding."""
    if rate <= 0 or duration <= 0 or max_in_flight < 1:
        raise ValueError("rate, duration and max_in_flight must be positive")
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(max_in_flight)
    result = RunResult(duration=duration)
    t0 = loop.time()
    window, end = t0 + warmup, t0 + warmup + duration
    tasks: set[asyncio.Task[None]] = set()

    # Request counts from integers, so that float rounding never adds or drops one at a boundary.
    total = math.ceil(round((warmup + duration) * rate, 6))
    first_measured = math.ceil(round(warmup * rate, 6))

    async def one(i: int, due: float) -> None:
        async with slots:
            done, code, first = await _timed(call, i)
        if i >= first_measured:
            result.samples.append(_sample(due, done, code, first, window))
        else:
            result.warmup_calls += 1

    for k in range(total):
        due = t0 + k / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(k, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return _finish(result, window, end)


async def run_concurrency(call: Call, concurrency: int, duration: float, *, warmup: float = 0.0) -> RunResult:
    """Closed model: ``concurrency`` workers, each sending its next request when the previous one completed."""
    if concurrency < 1 or duration <= 0:
        raise ValueError("concurrency and duration must be positive")
    loop = asyncio.get_running_loop()
    result = RunResult(duration=duration)
    t0 = loop.time()
    window, end = t0 + warmup, t0 + warmup + duration
    counter = itertools.count()

    async def worker() -> None:
        while (start := loop.time()) < end:
            done, code, first = await _timed(call, next(counter))
            if start >= window:
                result.samples.append(_sample(start, done, code, first, window))
            else:
                result.warmup_calls += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return _finish(result, window, end)
