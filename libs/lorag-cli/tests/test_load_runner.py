"""The load models of `lorag load`: how many requests each sends, from when latency counts, what is recorded.

The driven call is a coroutine of the test's own, so the schedule can be checked exactly; nothing here asserts how
fast anything ran, only relations between recorded times and the calls' own observations.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from lorag_cli.load.runner import run_concurrency, run_rate
from lorag_client import LoragError

pytestmark = pytest.mark.unit


def _rpc_error(code: grpc.StatusCode) -> LoragError:
    return LoragError("refused", code=code)  # What the SDK raises for a failed call.


async def test_fixed_rate_sends_rate_times_duration_requests_due_on_schedule():
    sent: list[int] = []

    async def call(i: int) -> None:
        sent.append(i)
        await asyncio.sleep(0.001)

    result = await run_rate(call, rate=40, duration=0.25)
    assert sorted(sent) == list(range(10))
    assert [round(s.start, 9) for s in sorted(result.samples, key=lambda s: s.start)] == [k / 40 for k in range(10)]
    assert {s.code for s in result.samples} == {"OK"} and result.elapsed >= 0.25


async def test_fixed_rate_counts_a_stalled_server_from_each_requests_due_time():
    """Coordinated omission avoided: requests queued behind a stall carry the stall in their latency."""
    release = asyncio.Event()
    began: dict[int, float] = {}
    loop = asyncio.get_running_loop()

    async def call(i: int) -> None:
        began[i] = loop.time()
        if i == 0:
            await asyncio.sleep(0.2)  # A stall: with one slot, every later request waits for it.
            release.set()
        await release.wait()

    result = await run_rate(call, rate=50, duration=0.1, max_in_flight=1)
    assert len(result.samples) == 5  # Sent on schedule even though the server stalled.
    for sample in result.samples:
        index = round(sample.start * 50)
        # began[0] is at or after t0, so this is at most the time from the request's due time to its actual send.
        assert sample.latency >= began[index] - began[0] - sample.start
    last = max(result.samples, key=lambda s: s.start)
    # Due at 80 ms, sent only after the 200 ms stall: the stall is in its latency, not hidden by a late send.
    assert last.start == pytest.approx(0.08) and last.latency >= began[4] - began[0] - last.start > 0.1


async def test_fixed_concurrency_never_exceeds_its_callers_and_records_errors_by_code():
    active = peak = 0

    async def call(i: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.005)
        active -= 1
        if i % 3 == 0:
            raise _rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED)

    result = await run_concurrency(call, concurrency=3, duration=0.1)
    assert peak == 3
    codes = {s.code for s in result.samples}
    assert codes == {"OK", "RESOURCE_EXHAUSTED"}


async def test_warmup_calls_run_but_are_not_recorded():
    sent: list[int] = []

    async def call(i: int) -> None:
        sent.append(i)

    result = await run_rate(call, rate=100, duration=0.05, warmup=0.05)
    assert len(sent) == 10 and result.warmup_calls == 5
    assert len(result.samples) == 5 and min(s.start for s in result.samples) >= 0


async def test_streams_record_their_first_message_and_client_failures_get_a_code():
    loop = asyncio.get_running_loop()

    async def call(i: int) -> float | None:
        if i == 1:
            raise ValueError("a bug in a payload builder")
        first = loop.time()
        await asyncio.sleep(0.01)
        return first

    result = await run_rate(call, rate=20, duration=0.1)
    ok = [s for s in result.samples if s.code == "OK"]
    assert {s.code for s in result.samples} == {"OK", "CLIENT_ValueError"}
    assert all(s.first_message is not None and 0 <= s.first_message <= s.latency for s in ok)


@pytest.mark.parametrize("bad", [{"rate": 0, "duration": 1}, {"rate": 1, "duration": 0}])
async def test_run_rate_refuses_nonsense(bad):
    async def call(i: int) -> None:
        return None

    with pytest.raises(ValueError):
        await run_rate(call, **bad)
