"""The scheduler owns the node's devices and runs one worker process per job.

Order: jobs re-queued after a crash first, then higher priority, then creation order. A job needing N GPUs gets N
free GPUs (one job per device set); with gpu_count 0 it trains on the CPU, at most ``max_cpu_jobs`` at once. The
head of a queue that cannot start blocks later jobs of the same kind (no starvation of big jobs).

A worker is ``python -m lorag_training.worker <job_dir>/spec.json`` (torchrun for several GPUs) in its own process
group, stdout and stderr in ``<job_dir>/worker.log``. Its ``events.jsonl`` is tailed into job events. When it
exits: "completed" + exit 0 -> SUCCEEDED; a "failed" line -> FAILED with its reason; a cancel -> CANCELLED; a crash
(a signal, or a non-zero exit without a "failed" line) -> re-queued at the front and relaunched from its last
checkpoint, up to ``max_restarts`` times (``restart_count`` counts these), then FAILED with WORKER_CRASHED.

Service shutdown: no new launches; running workers get SIGTERM (SIGKILL after ``worker_stop_seconds``) and their
jobs stay RUNNING, marked interrupted. On the next start, every job still RUNNING is re-queued at the front and
resumes from its checkpoint: an interrupted one without counting a restart, one whose service died (its worker may
even still be alive; it is stopped first) counting one. No job a client was told about is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lorag.common.v1 import common_pb2
from lorag.training.v1 import training_service_pb2 as pb
from lorag_core.telemetry import get_logger
from lorag_training.config import TrainingSettings
from lorag_training.datasets.store import FORMATS, DatasetStore
from lorag_training.jobs.capacity import NodeDevices
from lorag_training.jobs.events import RunOutcome, apply_line, read_lines
from lorag_training.jobs.store import TERMINAL, JobRecord, JobStore, now_timestamp, state_event

log = get_logger("lorag.training.scheduler")
State = pb.TrainingJob.State
METHODS = {
    pb.TRAINING_METHOD_UNSPECIFIED: "lora",
    pb.TRAINING_METHOD_LORA: "lora",
    pb.TRAINING_METHOD_QLORA: "qlora",
    pb.TRAINING_METHOD_DORA: "dora",
}
_LOG_TAIL_BYTES = 2000


@dataclass
class Running:
    job_id: str
    process: asyncio.subprocess.Process
    gpus: list[int]
    offset: int
    outcome: RunOutcome = field(default_factory=RunOutcome)
    monitor: asyncio.Task | None = None


def job_dir(settings: TrainingSettings, job_id: str) -> Path:
    return settings.data_dir / "jobs" / job_id


def _worker_alive(pid: int) -> bool:
    """True when ``pid`` is a live (not zombie) lorag training worker."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except (OSError, IndexError):
        return False
    return state != b"Z" and b"lorag_training.worker" in cmdline


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the worker leads its own process group (torchrun's children included)
    except (ProcessLookupError, PermissionError):
        pass


def log_tail(path: Path, limit: int = _LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - limit))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


class Scheduler:
    """Queues, launches, watches and recovers training jobs on this node."""

    def __init__(
        self,
        settings: TrainingSettings,
        jobs: JobStore,
        datasets: DatasetStore,
        devices: NodeDevices,
        tracer: trace.Tracer,
        meter: Meter | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.datasets = datasets
        self.devices = devices
        self.tracer = tracer
        self._running: dict[str, Running] = {}
        self._wake = asyncio.Event()
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._loop_task: asyncio.Task | None = None
        self._stopping = False
        self._finished = None
        if meter is not None:
            self._finished = meter.create_counter(
                "lorag.training.jobs.finished",
                unit="{job}",
                description="Jobs that reached a terminal state, by state.",
            )
            meter.create_observable_gauge(
                "lorag.training.jobs.running",
                callbacks=[self._observe_running],
                unit="{job}",
                description="Workers running now.",
            )
            meter.create_observable_gauge(
                "lorag.training.gpu.assigned",
                callbacks=[self._observe_gpus],
                unit="{gpu}",
                description="1 while a job holds the GPU, by device.",
            )
            meter.create_observable_gauge(
                "lorag.training.gpu.memory.total",
                callbacks=[self._observe_gpu_memory],
                unit="By",
                description="Memory of each GPU the scheduler owns.",
            )

    def _observe_running(self, _options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(len(self._running))

    def _observe_gpus(self, _options: CallbackOptions) -> Iterator[Observation]:
        """GPU use as the scheduler sees it: which of its devices a job holds (utilisation comes from the driver's
        exporter, e.g. dcgm-exporter, which the dashboard reads beside this)."""
        held = {gpu for run in self._running.values() for gpu in run.gpus}
        for gpu in self.devices.gpus:
            yield Observation(1 if gpu.ordinal in held else 0, {"device": str(gpu.ordinal), "name": gpu.name})

    def _observe_gpu_memory(self, _options: CallbackOptions) -> Iterator[Observation]:
        for gpu in self.devices.gpus:
            yield Observation(gpu.total_memory, {"device": str(gpu.ordinal), "name": gpu.name})

    # --- notifications for watchers ---------------------------------------------------------------------------

    def subscribe(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._watchers.setdefault(job_id, set()).add(event)
        return event

    def unsubscribe(self, job_id: str, event: asyncio.Event) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(event)
            if not watchers:
                del self._watchers[job_id]

    def notify(self, job_id: str) -> None:
        for event in self._watchers.get(job_id, ()):
            event.set()

    def wake(self) -> None:
        self._wake.set()

    async def _update(self, job_id: str, change: Callable[[JobRecord], Sequence[pb.JobEvent] | None]) -> JobRecord:
        record = await self.jobs.update(job_id, change)
        self.notify(job_id)
        return record

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover jobs a previous service left RUNNING, then start scheduling."""
        await self.recover()
        self._loop_task = asyncio.create_task(self._loop(), name="training-scheduler")
        self.wake()

    async def recover(self) -> None:
        for record in await self.jobs.in_state(State.STATE_RUNNING):
            await self._recover_one(record)

    async def _recover_one(self, record: JobRecord) -> None:
        job_id = record.job.id
        pid = record.worker_pid
        if pid and _worker_alive(pid):
            log.warning("stopping a worker left by a previous service", job_id=job_id, pid=pid)
            await self._stop_pid(pid)
        path = job_dir(self.settings, job_id) / "events.jsonl"
        outcome = RunOutcome()
        lines, offset = read_lines(path, record.events_offset)

        def change(rec: JobRecord) -> list[pb.JobEvent]:
            events: list[pb.JobEvent] = []
            for line in lines:
                events.extend(apply_line(rec.job, line, outcome))
            rec.events_offset = offset
            rec.worker_pid = None
            if outcome.adapter is not None and outcome.adapter.version:
                events.append(self._terminal(rec, State.STATE_SUCCEEDED, adapter=outcome.adapter))
            elif rec.cancel_requested:
                events.append(self._terminal(rec, State.STATE_CANCELLED))
            else:
                counted = not rec.interrupted
                if counted:
                    rec.job.restart_count += 1
                why = "the service was stopped" if rec.interrupted else "the service stopped unexpectedly"
                rec.interrupted = False
                rec.front = 1
                rec.job.state = State.STATE_QUEUED
                rec.job.resources.ClearField("assigned_devices")
                events.append(
                    pb.JobEvent(
                        log=pb.LogMessage(
                            level=pb.LOG_LEVEL_WARNING,
                            message=f"{why} while the job ran; re-queued to resume from its last checkpoint"
                            + (f" (restart {rec.job.restart_count})" if counted else ""),
                        )
                    )
                )
                events.append(state_event(State.STATE_RUNNING, State.STATE_QUEUED))
            return events

        record = await self._update(job_id, change)
        log.info(
            "recovered job", job_id=job_id, state=State.Name(record.job.state), restart_count=record.job.restart_count
        )

    async def close(self) -> None:
        """Stop launching; SIGTERM running workers and leave their jobs to resume on the next start."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        running = list(self._running.values())
        for run in running:
            await self._update(run.job_id, lambda rec: setattr(rec, "interrupted", True))
        await asyncio.gather(*(self._terminate(run) for run in running), return_exceptions=True)
        for run in running:
            if run.monitor is not None:
                run.monitor.cancel()
        await asyncio.gather(*(run.monitor for run in running if run.monitor), return_exceptions=True)
        for run in running:  # record what the worker wrote before it stopped; the state stays RUNNING
            lines, offset = read_lines(job_dir(self.settings, run.job_id) / "events.jsonl", run.offset)
            if lines:
                await self._ingest(run, lines, offset)
        self._running.clear()

    async def _stop_pid(self, pid: int) -> None:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.worker_stop_seconds
        while _worker_alive(pid) and time.monotonic() < deadline:  # noqa: ASYNC110 - not our child: nothing to await
            await asyncio.sleep(0.1)
        if _worker_alive(pid):
            _signal_group(pid, signal.SIGKILL)

    async def _terminate(self, run: Running) -> None:
        _signal_group(run.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(run.process.wait(), self.settings.worker_stop_seconds)
        except TimeoutError:
            log.warning("worker ignored SIGTERM; killing it", job_id=run.job_id, pid=run.process.pid)
            _signal_group(run.process.pid, signal.SIGKILL)
            await run.process.wait()

    # --- cancel -----------------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> JobRecord:
        """QUEUED -> CANCELLED now; RUNNING -> SIGTERM to the worker, CANCELLED once it exits."""
        from lorag_core.errors import FailedPrecondition

        def change(rec: JobRecord) -> list[pb.JobEvent]:
            state = rec.job.state
            if state in (State.STATE_SUCCEEDED, State.STATE_FAILED):
                raise FailedPrecondition(
                    message=f"job {job_id} already {State.Name(state).removeprefix('STATE_')}; only QUEUED or "
                    "RUNNING jobs can be cancelled",
                    reason="JOB_FINISHED",
                    metadata={"id": job_id, "state": State.Name(state)},
                )
            if state == State.STATE_CANCELLED or rec.cancel_requested:
                return []
            if state == State.STATE_QUEUED:
                return [self._terminal(rec, State.STATE_CANCELLED)]
            rec.cancel_requested = True
            return [
                pb.JobEvent(
                    log=pb.LogMessage(level=pb.LOG_LEVEL_INFO, message="cancellation requested; stopping the worker")
                )
            ]

        record = await self._update(job_id, change)
        run = self._running.get(job_id)
        if record.cancel_requested and run is not None:
            _signal_group(run.process.pid, signal.SIGTERM)
        elif record.cancel_requested and record.worker_pid and _worker_alive(record.worker_pid):
            _signal_group(record.worker_pid, signal.SIGTERM)
        self.wake()
        return record

    # --- scheduling -------------------------------------------------------------------------------------------

    def _free_gpus(self) -> list[int]:
        used = {g for run in self._running.values() for g in run.gpus}
        return [g.ordinal for g in self.devices.gpus if g.ordinal not in used]

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), 2.0)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._schedule()
            except Exception:
                log.exception("scheduling pass failed")
                await asyncio.sleep(1.0)

    async def _schedule(self) -> None:
        gpu_blocked = cpu_blocked = False
        for record in await self.jobs.in_state(State.STATE_QUEUED):
            if self._stopping:
                return
            need = record.job.resources.gpu_count
            if need > 0:
                free = self._free_gpus()
                if gpu_blocked or len(free) < need:
                    gpu_blocked = True
                    continue
                await self._launch(record, free[:need])
            else:
                cpu_running = sum(1 for run in self._running.values() if not run.gpus)
                if cpu_blocked or cpu_running >= self.settings.max_cpu_jobs:
                    cpu_blocked = True
                    continue
                await self._launch(record, [])

    def _spec(self, job: pb.TrainingJob, dataset: pb.Dataset, gpus: list[int], directory: Path) -> dict:
        hp = job.hyperparameters
        return {
            "job_id": job.id,
            "base_model": job.base_model,
            "dataset_path": str(self.datasets.data_path(dataset.version)),
            "dataset_version": dataset.version,
            "dataset_format": FORMATS[dataset.format],
            "method": METHODS[job.method],
            "hyperparameters": {
                "rank": hp.rank,
                "alpha": hp.alpha,
                "dropout": hp.dropout,
                "target_modules": list(hp.target_modules),
                "epochs": hp.epochs,
                "max_steps": hp.max_steps if hp.HasField("max_steps") else 0,
                "learning_rate": hp.learning_rate,
                "batch_size": hp.batch_size,
                "gradient_accumulation_steps": hp.gradient_accumulation_steps,
                "max_length": hp.max_length,
                "seed": hp.seed,
                "eval_split_fraction": hp.eval_split_fraction,
                "warmup_ratio": hp.warmup_ratio,
                "eval_steps": hp.eval_steps if hp.HasField("eval_steps") else 0,
                "save_steps": hp.save_steps if hp.HasField("save_steps") else 0,
                "logging_steps": hp.logging_steps,
            },
            "adapter_name": job.adapter_name,
            "output_dir": str(directory),
            "mlflow": {
                "tracking_uri": self.settings.resolved_tracking_uri,
                "registry_uri": self.settings.resolved_registry_uri,
                "experiment": self.settings.mlflow_experiment,
            },
            "devices": [f"cuda:{i}" for i in range(len(gpus))],
            "display_name": job.display_name,
            "dataset_name": dataset.name,  # beyond the contract: lineage for the registry, ignored if unknown
        }

    def _command(self, spec_path: Path, gpus: list[int]) -> list[str]:
        if len(gpus) > 1:
            return [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(len(gpus)),
                "-m",
                "lorag_training.worker",
                str(spec_path),
            ]
        return [sys.executable, "-m", "lorag_training.worker", str(spec_path)]

    def _environment(self, record: JobRecord, gpus: list[int]) -> dict[str, str]:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        if record.traceparent:
            env["TRACEPARENT"] = record.traceparent
        env["OTEL_SERVICE_NAME"] = "lorag-training-worker"
        env["LORAG_LOG_LEVEL"] = self.settings.log_level
        env["MLFLOW_TRACKING_URI"] = self.settings.resolved_tracking_uri
        # The chassis makes request-driven servers' OpenMP threads wait passively; a worker owns its cores for the
        # whole job and chooses its own policy (lorag_training.worker.__main__.set_thread_wait_policy).
        env.pop("OMP_WAIT_POLICY", None)
        return env

    def _job_context(self, record: JobRecord) -> otel_context.Context | None:
        if not record.traceparent:
            return None
        return TraceContextTextMapPropagator().extract({"traceparent": record.traceparent})

    async def _launch(self, record: JobRecord, gpus: list[int]) -> None:
        job_id = record.job.id
        directory = job_dir(self.settings, job_id)
        with self.tracer.start_as_current_span("training_job.launch", context=self._job_context(record)) as span:
            span.set_attribute("lorag.training.job_id", job_id)
            span.set_attribute("lorag.training.gpus", len(gpus))
            span.set_attribute("lorag.training.restart_count", record.job.restart_count)
            try:
                dataset = await self.datasets.get("", record.job.dataset_version)
            except Exception as exc:
                await self._fail(job_id, "DATASET_UNREADABLE", f"dataset {record.job.dataset_version}: {exc}")
                return
            directory.mkdir(parents=True, exist_ok=True)
            spec_path = directory / "spec.json"
            spec_path.write_text(json.dumps(self._spec(record.job, dataset, gpus, directory), indent=2))
            devices = [f"cuda:{g}" for g in gpus] or ["cpu"]

            def to_running(rec: JobRecord) -> list[pb.JobEvent]:
                if rec.job.state != State.STATE_QUEUED:  # cancelled meanwhile
                    raise _Skip()
                rec.job.state = State.STATE_RUNNING
                if not rec.job.HasField("start_time"):
                    rec.job.start_time.CopyFrom(now_timestamp())
                del rec.job.resources.assigned_devices[:]
                rec.job.resources.assigned_devices.extend(devices)
                rec.job.resources.node = self.settings.node_name
                rec.front = 0
                rec.interrupted = False
                return [state_event(State.STATE_QUEUED, State.STATE_RUNNING)]

            try:
                record = await self._update(job_id, to_running)
            except _Skip:
                return
            log_file = open(directory / "worker.log", "ab")  # noqa: SIM115, ASYNC230 - handed to the child; a local open
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._command(spec_path, gpus),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=str(directory),
                    env=self._environment(record, gpus),
                    start_new_session=True,
                )
            except OSError as exc:
                await self._fail(job_id, "WORKER_START_FAILED", f"the worker could not be started: {exc}")
                return
            finally:
                log_file.close()
            run = Running(job_id, process, gpus, record.events_offset)
            self._running[job_id] = run
            await self._update(job_id, lambda rec: setattr(rec, "worker_pid", process.pid))
            run.monitor = asyncio.create_task(self._monitor(run), name=f"training-job-{job_id}")
            span.set_attribute("lorag.training.worker_pid", process.pid)
            log.info(
                "worker started",
                job_id=job_id,
                pid=process.pid,
                devices=devices,
                restart_count=record.job.restart_count,
            )

    # --- monitoring -------------------------------------------------------------------------------------------

    async def _ingest(self, run: Running, lines: Sequence[dict], offset: int) -> None:
        def change(rec: JobRecord) -> list[pb.JobEvent]:
            events: list[pb.JobEvent] = []
            for line in lines:
                events.extend(apply_line(rec.job, line, run.outcome))
            rec.events_offset = offset
            return events

        await self._update(run.job_id, change)
        run.offset = offset

    async def _monitor(self, run: Running) -> None:
        path = job_dir(self.settings, run.job_id) / "events.jsonl"
        try:
            while True:
                lines, offset = read_lines(path, run.offset)
                if lines:
                    await self._ingest(run, lines, offset)
                if run.process.returncode is not None:
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(run.process.wait()), self.settings.poll_seconds)
                except TimeoutError:
                    pass
            lines, offset = read_lines(path, run.offset)
            if lines:
                await self._ingest(run, lines, offset)
            if self._stopping:
                return
            await self._finish(run, run.process.returncode)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("monitoring a worker failed", job_id=run.job_id)
            await self._fail(run.job_id, "SCHEDULER_ERROR", "the service lost track of the worker; see its log")
        finally:
            if not self._stopping:
                self._running.pop(run.job_id, None)
                self.wake()

    def _terminal(
        self,
        rec: JobRecord,
        state: pb.TrainingJob.State.ValueType,
        error: pb.JobError | None = None,
        adapter: common_pb2.AdapterReference | None = None,
    ) -> pb.JobEvent:
        previous = rec.job.state
        rec.job.state = state
        rec.job.end_time.CopyFrom(now_timestamp())
        rec.worker_pid = None
        fields: dict[str, Any] = {}
        if error is not None:
            rec.job.error.CopyFrom(error)
            fields["error"] = error
        if adapter is not None:
            rec.job.result_adapter.CopyFrom(adapter)
            fields["result_adapter"] = adapter
            if rec.job.progress.total_steps:
                rec.job.progress.step = rec.job.progress.total_steps
        if self._finished is not None:
            self._finished.add(1, {"state": State.Name(state).removeprefix("STATE_")})
        return state_event(previous, state, **fields)

    async def _fail(self, job_id: str, reason: str, message: str) -> None:
        def change(rec: JobRecord) -> list[pb.JobEvent]:
            if rec.job.state in TERMINAL:
                return []
            return [self._terminal(rec, State.STATE_FAILED, error=pb.JobError(reason=reason, message=message))]

        await self._update(job_id, change)

    async def _finish(self, run: Running, returncode: int | None) -> None:
        outcome = run.outcome
        tail = log_tail(job_dir(self.settings, run.job_id) / "worker.log")
        max_restarts = self.settings.max_restarts

        def change(rec: JobRecord) -> list[pb.JobEvent]:
            if rec.job.state in TERMINAL:
                return []
            if rec.cancel_requested:
                return [self._terminal(rec, State.STATE_CANCELLED)]
            if returncode == 0 and outcome.adapter is not None:
                return [self._terminal(rec, State.STATE_SUCCEEDED, adapter=outcome.adapter)]
            if outcome.error is not None:
                message = outcome.error.message + (f"\n--- worker log ---\n{tail}" if tail else "")
                return [
                    self._terminal(
                        rec, State.STATE_FAILED, error=pb.JobError(reason=outcome.error.reason, message=message)
                    )
                ]
            if returncode == 0:
                return [
                    self._terminal(
                        rec,
                        State.STATE_FAILED,
                        error=pb.JobError(
                            reason="WORKER_EXITED_WITHOUT_RESULT",
                            message=f"the worker exited 0 without registering an adapter\n--- worker log ---\n{tail}",
                        ),
                    )
                ]
            how = f"signal {-returncode}" if returncode is not None and returncode < 0 else f"exit status {returncode}"
            if rec.job.restart_count < max_restarts:
                rec.job.restart_count += 1
                rec.job.state = State.STATE_QUEUED
                rec.job.resources.ClearField("assigned_devices")
                rec.front = 1
                rec.worker_pid = None
                return [
                    pb.JobEvent(
                        log=pb.LogMessage(
                            level=pb.LOG_LEVEL_WARNING,
                            message=(
                                f"the worker crashed ({how}); re-queued to resume from its last checkpoint "
                                f"(restart {rec.job.restart_count} of {max_restarts})"
                            ),
                        )
                    ),
                    state_event(State.STATE_RUNNING, State.STATE_QUEUED),
                ]
            return [
                self._terminal(
                    rec,
                    State.STATE_FAILED,
                    error=pb.JobError(
                        reason="WORKER_CRASHED",
                        message=f"the worker crashed ({how}) after {rec.job.restart_count} restarts"
                        + (f"\n--- worker log ---\n{tail}" if tail else ""),
                    ),
                )
            ]

        record = await self._update(run.job_id, change)
        log.info("worker exited", job_id=run.job_id, returncode=returncode, state=State.Name(record.job.state))


class _Skip(Exception):
    """The job left QUEUED before it could be launched."""
