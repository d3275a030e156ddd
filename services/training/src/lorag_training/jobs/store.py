"""Jobs, their numbered events and their checkpoints, persisted (SQLAlchemy; any database URL).

A job changes only through :meth:`JobStore.update`, which applies a change and appends its events in one
transaction: the job a client reads and the events it watches never disagree, and sequence numbers have no gaps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from lorag.training.v1 import training_service_pb2 as pb
from lorag_core.errors import AlreadyExists, NotFound
from lorag_training import db as tables

State = pb.TrainingJob.State
TERMINAL = frozenset({State.STATE_SUCCEEDED, State.STATE_FAILED, State.STATE_CANCELLED})


@dataclass
class JobRecord:
    """A job with the scheduler's bookkeeping that is not part of the API."""

    job: pb.TrainingJob
    last_sequence: int
    events_offset: int
    worker_pid: int | None
    interrupted: bool
    front: int
    cancel_requested: bool = False
    traceparent: str = ""


def now_timestamp() -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


def state_event(
    previous: pb.TrainingJob.State.ValueType, state: pb.TrainingJob.State.ValueType, **fields: Any
) -> pb.JobEvent:
    return pb.JobEvent(state_change=pb.StateChange(previous_state=previous, state=state, **fields))


class JobStore:
    """Blocking methods are private; the async ones run them on the database thread."""

    def __init__(self, database: tables.Database) -> None:
        self.db = database

    # --- reads -----------------------------------------------------------------------------------------------

    @staticmethod
    def _record(row: Any) -> JobRecord:
        return JobRecord(
            pb.TrainingJob.FromString(row.proto),
            row.last_sequence,
            row.events_offset,
            row.worker_pid,
            bool(row.interrupted),
            row.front,
            bool(row.cancel_requested),
            row.traceparent or "",
        )

    def _load(self, conn: Connection, job_id: str) -> JobRecord:
        row = conn.execute(select(tables.jobs).where(tables.jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(
                message=f"no training job has id {job_id!r}", reason="JOB_NOT_FOUND", metadata={"id": job_id}
            )
        return self._record(row)

    def _get(self, job_id: str) -> JobRecord:
        with self.db.engine.connect() as conn:
            return self._load(conn, job_id)

    async def get(self, job_id: str) -> JobRecord:
        return await self.db.run(self._get, job_id)

    def _list_page(
        self, states: Sequence[int], adapter_name: str, size: int, offset: int
    ) -> tuple[list[pb.TrainingJob], bool]:
        query = select(tables.jobs.c.proto)
        if states:
            query = query.where(tables.jobs.c.state.in_(list(states)))
        if adapter_name:
            query = query.where(tables.jobs.c.adapter_name == adapter_name)
        query = query.order_by(tables.jobs.c.row_id.desc()).offset(offset).limit(size + 1)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [pb.TrainingJob.FromString(r.proto) for r in rows[:size]], len(rows) > size

    async def list_page(
        self, states: Sequence[int], adapter_name: str, size: int, offset: int
    ) -> tuple[list[pb.TrainingJob], bool]:
        """One page of jobs, newest first, and whether more follow."""
        return await self.db.run(self._list_page, states, adapter_name, size, offset)

    def _in_state(self, state: int) -> list[JobRecord]:
        columns = tables.jobs.c
        query = select(tables.jobs).where(columns.state == state)
        if state == State.STATE_QUEUED:  # the scheduler's order: re-queued first, then priority, then age
            query = query.order_by(columns.front.desc(), columns.priority.desc(), columns.row_id.asc())
        with self.db.engine.connect() as conn:
            return [self._record(r) for r in conn.execute(query).all()]

    async def in_state(self, state: int) -> list[JobRecord]:
        return await self.db.run(self._in_state, state)

    def _events_after(self, job_id: str, after: int, limit: int) -> list[pb.JobEvent]:
        query = (
            select(tables.job_events.c.proto)
            .where(tables.job_events.c.job_id == job_id, tables.job_events.c.sequence > after)
            .order_by(tables.job_events.c.sequence.asc())
            .limit(limit)
        )
        with self.db.engine.connect() as conn:
            return [pb.JobEvent.FromString(r.proto) for r in conn.execute(query).all()]

    async def events_after(self, job_id: str, after: int, limit: int = 500) -> list[pb.JobEvent]:
        return await self.db.run(self._events_after, job_id, after, limit)

    def _checkpoints(self, job_id: str, size: int, offset: int) -> tuple[list[pb.Checkpoint], bool]:
        with self.db.engine.connect() as conn:
            self._load(conn, job_id)
            rows = conn.execute(
                select(tables.checkpoints.c.proto)
                .where(tables.checkpoints.c.job_id == job_id)
                .order_by(tables.checkpoints.c.step.asc(), tables.checkpoints.c.name.asc())
                .offset(offset)
                .limit(size + 1)
            ).all()
        return [pb.Checkpoint.FromString(r.proto) for r in rows[:size]], len(rows) > size

    async def checkpoints(self, job_id: str, size: int, offset: int) -> tuple[list[pb.Checkpoint], bool]:
        """One page of a job's checkpoints, oldest first; NOT_FOUND for an unknown job."""
        return await self.db.run(self._checkpoints, job_id, size, offset)

    # --- writes ----------------------------------------------------------------------------------------------

    def _append(self, conn: Connection, job: pb.TrainingJob, last_sequence: int, events: Sequence[pb.JobEvent]) -> int:
        for event in events:
            last_sequence += 1
            event.sequence = last_sequence
            event.job_id = job.id
            if not event.HasField("time"):
                event.time.CopyFrom(now_timestamp())
            conn.execute(
                insert(tables.job_events).values(job_id=job.id, sequence=last_sequence, proto=event.SerializeToString())
            )
            if event.HasField("checkpoint_saved"):
                checkpoint = event.checkpoint_saved
                existing = conn.execute(
                    select(tables.checkpoints.c.name).where(
                        tables.checkpoints.c.job_id == job.id, tables.checkpoints.c.name == checkpoint.name
                    )
                ).first()
                values = {"step": checkpoint.step, "proto": checkpoint.SerializeToString()}
                if existing is None:
                    conn.execute(insert(tables.checkpoints).values(job_id=job.id, name=checkpoint.name, **values))
                else:  # a resumed worker saved the same step again
                    conn.execute(
                        update(tables.checkpoints)
                        .where(tables.checkpoints.c.job_id == job.id, tables.checkpoints.c.name == checkpoint.name)
                        .values(**values)
                    )
        return last_sequence

    def _create(
        self, job: pb.TrainingJob, request_id: str, request_hash: str, traceparent: str
    ) -> tuple[pb.TrainingJob, bool]:
        with self.db.engine.begin() as conn:
            if request_id:
                row = conn.execute(select(tables.jobs).where(tables.jobs.c.request_id == request_id)).first()
                if row is not None:
                    if row.request_hash != request_hash:
                        raise AlreadyExists(
                            message=f"request_id {request_id!r} was already used for a different job ({row.id})",
                            reason="REQUEST_ID_REUSED",
                            metadata={"request_id": request_id, "job_id": row.id},
                        )
                    return pb.TrainingJob.FromString(row.proto), False
            events = [state_event(State.STATE_UNSPECIFIED, State.STATE_QUEUED)]
            conn.execute(
                insert(tables.jobs).values(
                    id=job.id,
                    state=job.state,
                    priority=job.priority,
                    front=0,
                    adapter_name=job.adapter_name,
                    request_id=request_id or None,
                    request_hash=request_hash or None,
                    last_sequence=0,
                    events_offset=0,
                    worker_pid=None,
                    interrupted=False,
                    cancel_requested=False,
                    traceparent=traceparent or None,
                    proto=job.SerializeToString(),
                )
            )
            last = self._append(conn, job, 0, events)
            conn.execute(update(tables.jobs).where(tables.jobs.c.id == job.id).values(last_sequence=last))
            return job, True

    async def create(
        self, job: pb.TrainingJob, request_id: str = "", request_hash: str = "", traceparent: str = ""
    ) -> tuple[pb.TrainingJob, bool]:
        """Persist a new QUEUED job with its first event; a repeated request_id returns the first job."""
        return await self.db.run(self._create, job, request_id, request_hash, traceparent)

    def _update(self, job_id: str, change: Callable[[JobRecord], Sequence[pb.JobEvent] | None]) -> JobRecord:
        with self.db.engine.begin() as conn:
            record = self._load(conn, job_id)
            events = list(change(record) or [])
            record.job.update_time.CopyFrom(now_timestamp())
            record.last_sequence = self._append(conn, record.job, record.last_sequence, events)
            conn.execute(
                update(tables.jobs)
                .where(tables.jobs.c.id == job_id)
                .values(
                    state=record.job.state,
                    last_sequence=record.last_sequence,
                    events_offset=record.events_offset,
                    worker_pid=record.worker_pid,
                    interrupted=record.interrupted,
                    front=record.front,
                    cancel_requested=record.cancel_requested,
                    proto=record.job.SerializeToString(),
                )
            )
            return record

    async def update(self, job_id: str, change: Callable[[JobRecord], Sequence[pb.JobEvent] | None]) -> JobRecord:
        """Apply ``change`` to the stored job (on the database thread) and append the events it returns.

        ``change`` mutates the record in place (the job proto and the bookkeeping columns) and may raise to abort.
        """
        return await self.db.run(self._update, job_id, change)

    def _by_request(self, request_id: str) -> tuple[pb.TrainingJob, str] | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(tables.jobs.c.proto, tables.jobs.c.request_hash).where(tables.jobs.c.request_id == request_id)
            ).first()
        return None if row is None else (pb.TrainingJob.FromString(row.proto), row.request_hash or "")

    async def by_request(self, request_id: str) -> tuple[pb.TrainingJob, str] | None:
        """The job created under ``request_id`` and the hash of its request, if any."""
        return await self.db.run(self._by_request, request_id)
