"""Write retries: exponential backoff with jitter, bounded by tries, Weaviate's reachability and the caller's deadline.

Writes are idempotent (the object id is the chunk id; deletes by filter delete what is left), which is what makes
retrying them, and a caller's retry of the whole request, safe. No retry library is installed in the indexer's
environment, and this loop needs to consult the connection and the caller's deadline between tries, so it is ours.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry import trace

from lorag_core.errors import LoragError, Unavailable
from lorag_core.interceptors import remaining_time
from lorag_core.telemetry import get_logger
from lorag_indexer.backends.weaviate import errors
from lorag_indexer.backends.weaviate.connection import WeaviateConnection

log = get_logger(__name__)

T = TypeVar("T")


class RetryableWrite(Exception):
    """A write attempt that may succeed if tried again; carries the error to report when tries run out."""

    def __init__(self, error: LoragError) -> None:
        super().__init__(error.message)
        self.error = error


def incomplete(message: str, failed: int) -> RetryableWrite:
    """Weaviate did not confirm ``failed`` objects (or deletions): worth another try."""
    return RetryableWrite(
        Unavailable(message, reason=errors.WRITE_INCOMPLETE, metadata={**errors.DEPENDENCY, "failed": str(failed)})
    )


class WriteRetries:
    """Runs write attempts until one succeeds (``write_attempts`` tries at most, ``write_backoff_*`` between)."""

    def __init__(self, connection: WeaviateConnection, counter: Any = None) -> None:
        self._connection = connection
        self._settings = connection.settings
        self._counter = counter  # lorag.indexer.weaviate.write_retries, when metrics are on

    async def run(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, with exponential backoff between tries.

        ``attempt`` raises :class:`RetryableWrite` for partial failures and may raise ``Unavailable``; both are
        retried while tries remain, Weaviate is up, and the caller's deadline leaves room for the wait. Other errors
        end at once.
        """
        s = self._settings
        last: LoragError | None = None
        for number in range(1, s.write_attempts + 1):
            try:
                return await attempt()
            except RetryableWrite as retry:
                last = retry.error
            except Unavailable as exc:
                # Permission problems do not heal by retrying; a timed-out write means Weaviate is overloaded (or
                # still working on it), and piling the same write on again would only add to its load.
                if exc.reason in (errors.PERMISSION_DENIED, errors.TIMEOUT) or not self._connection.up:
                    raise
                last = exc
            if number == s.write_attempts:
                break
            delay = min(s.write_backoff_seconds * 2 ** (number - 1), s.write_backoff_max_seconds)
            delay *= 0.5 + random.random() / 2  # jitter: replicas retrying together do not stay in step
            left = remaining_time()
            if left is not None and left <= delay:
                break
            log.warning(
                "retrying weaviate write", what=what, attempt=number, delay_s=round(delay, 3), error=last.message
            )
            trace.get_current_span().add_event("retry", {"attempt": number, "delay_s": delay})
            if self._counter is not None:
                self._counter.add(1, {"operation": what})
            await asyncio.sleep(delay)
            if not self._connection.up:
                raise self._connection.outage(what)
        assert last is not None
        raise last


__all__ = ["RetryableWrite", "WriteRetries", "incomplete"]
