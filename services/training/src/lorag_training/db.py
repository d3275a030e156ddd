"""The service's database: datasets, jobs, their events and checkpoints (SQLAlchemy; SQLite by default).

Every statement runs on one dedicated thread, so the asyncio loop never blocks on disk and writes are serialised:
an event's sequence number and the job's ``last_sequence`` are assigned in one transaction without races.
Resources are stored as their serialised protos beside the few columns queries filter and sort on, so the stored
shape is the API's shape and a new output field needs no migration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from lorag_core.errors import Unavailable

T = TypeVar("T")

metadata = MetaData()

datasets = Table(
    "datasets",
    metadata,
    Column("row_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, index=True),
    Column("version", String(64), nullable=False, index=True),
    Column("error_count", Integer, nullable=False),
    Column("create_time", Float, nullable=False),
    Column("proto", LargeBinary, nullable=False),
    UniqueConstraint("name", "version", name="uq_dataset_name_version"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("row_id", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("state", Integer, nullable=False, index=True),
    Column("priority", Integer, nullable=False),
    Column("front", Integer, nullable=False, default=0),  # 1 = re-queued after a crash: starts before the others
    Column("adapter_name", String(128), nullable=False, index=True),
    Column("request_id", String(256), nullable=True, unique=True),
    Column("request_hash", String(64), nullable=True),
    Column("last_sequence", Integer, nullable=False, default=0),
    Column("events_offset", Integer, nullable=False, default=0),  # bytes of events.jsonl already turned into events
    Column("worker_pid", Integer, nullable=True),
    Column("interrupted", Boolean, nullable=False, default=False),  # stopped by a service shutdown, not a crash
    Column("cancel_requested", Boolean, nullable=False, default=False),  # SIGTERM sent; CANCELLED once it exits
    Column("traceparent", String(64), nullable=True),  # W3C context of the job's "training_job" span
    Column("proto", LargeBinary, nullable=False),
)

job_events = Table(
    "job_events",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("sequence", Integer, primary_key=True),
    Column("proto", LargeBinary, nullable=False),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("name", String(256), primary_key=True),
    Column("step", Integer, nullable=False),
    Column("proto", LargeBinary, nullable=False),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged job survives a power cut
    cursor.close()


class Database:
    """An engine plus the one thread that talks to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-db")

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store function on the database thread; a lost database is UNAVAILABLE."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except OperationalError as exc:
            raise Unavailable(
                message=f"the training database cannot be reached: {exc.orig}", metadata={"dependency": "database"}
            ) from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.engine.dispose()
