"""What the event loop and the decode thread share: a request's row, adapter commands, and the inbox between them.

The event loop submits rows and commands to the :class:`Inbox`, which also counts admission slots (the batch plus
the queue), and reads each row's items from the row's asyncio queue. The decode thread takes rows and commands from
the inbox between steps and hands items back with one ``call_soon_threadsafe`` per event loop per step
(:func:`deliver`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from lorag_core.errors import ResourceExhausted
from lorag_generation.backends.base import AdapterFiles, SamplingSettings, StreamItem
from lorag_generation.backends.transformers.detokenize import IncrementalDetokenizer
from lorag_generation.backends.transformers.sampling import RowSampler
from lorag_generation.stops import StopMatcher


@dataclass(eq=False)
class Row:
    """One request's state, shared by its asyncio consumer and the decode thread."""

    prompt_ids: list[int]
    sampling: SamplingSettings
    adapter: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[StreamItem | BaseException]
    received_ns: int
    sampler: RowSampler | None = None  # these three are made by the decode thread when the row is admitted
    detok: IncrementalDetokenizer | None = None
    stops: StopMatcher | None = None
    completion_tokens: int = 0
    unsent_tokens: int = 0
    admitted_ns: int = 0
    first_token_ns: int = 0
    cancelled: bool = False  # set by the consumer when it goes away
    done: bool = False  # set by the decode thread once Finished (or an error) is queued
    released: bool = False  # its admission slot was given back
    outbox: list[StreamItem | BaseException] = field(default_factory=list)


class Command:
    """Work the decode thread runs between steps (adapter loads and unloads), with a future for the caller."""

    def __init__(self, kind: str, name: str, files: AdapterFiles | None = None) -> None:
        self.kind = kind
        self.name = name
        self.files = files
        self.future: Future[None] = Future()


class Inbox:
    """Rows waiting for a decode slot, adapter commands, and the stop flag, under one condition the decode thread
    waits on; ``in_flight`` counts the rows running or waiting against ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.cond = threading.Condition()
        self.pending: deque[Row] = deque()
        self.commands: deque[Command] = deque()
        self.capacity = capacity
        self.in_flight = 0
        self.stopping = False

    def submit(self, row: Row) -> None:
        """Queue ``row`` for the decode loop; RESOURCE_EXHAUSTED when every slot (batch and queue) is taken."""
        with self.cond:
            if self.in_flight >= self.capacity:
                raise ResourceExhausted(
                    f"the generation queue is full ({self.in_flight} requests running or waiting, limit "
                    f"{self.capacity}); retry later",
                    reason="QUEUE_FULL",
                    metadata={"limit": str(self.capacity)},
                )
            self.in_flight += 1
            self.pending.append(row)
            self.cond.notify()

    def release(self, row: Row) -> None:
        """Give the row's admission slot back (once), from either side."""
        with self.cond:
            if not row.released:
                row.released = True
                self.in_flight -= 1
                self.cond.notify()

    def send(self, command: Command) -> None:
        with self.cond:
            self.commands.append(command)
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


def deliver(rows: Iterable[Row]) -> None:
    """Hand every row's new items to its event loop in one thread-safe call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Row]] = {}
    for row in rows:
        if row.outbox:
            by_loop.setdefault(row.loop, []).append(row)
    for loop, waiting in by_loop.items():
        batch = [(row.queue, row.outbox) for row in waiting]
        for row in waiting:
            row.outbox = []
        try:
            loop.call_soon_threadsafe(_put_all, batch)
        except RuntimeError:  # the loop is closed: nobody is listening
            pass


def flush(row: Row) -> None:
    """Hand one row's items to its event loop now (a row leaving outside a step)."""
    if row.outbox:
        items, row.outbox = row.outbox, []
        try:
            row.loop.call_soon_threadsafe(_put_all, [(row.queue, items)])
        except RuntimeError:
            pass


def _put_all(batch: list[tuple[asyncio.Queue[Any], list[Any]]]) -> None:
    for queue, items in batch:
        for item in items:
            queue.put_nowait(item)
