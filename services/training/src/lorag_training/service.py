"""The TrainingService handlers: proto in, domain call, proto out. The work is in datasets/, jobs/ and registry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lorag.training.v1 import training_service_pb2 as pb
from lorag.training.v1 import training_service_pb2_grpc as pb_grpc
from lorag_core.errors import AlreadyExists, InvalidArgument, OutOfRange, ResourceExhausted, Unavailable
from lorag_core.telemetry import get_logger
from lorag_training.config import TrainingSettings
from lorag_training.datasets.store import FORMATS, NAME_PATTERN, DatasetStore, analyse, to_proto
from lorag_training.db import decode_page_token, encode_page_token, page_size
from lorag_training.jobs.capacity import NodeDevices
from lorag_training.jobs.scheduler import Scheduler
from lorag_training.jobs.store import TERMINAL, JobStore
from lorag_training.jobs.validation import resolve_job

log = get_logger("lorag.training.service")
MAX_CHUNK = 1024 * 1024
MAX_DATASET_MAX_LENGTH = 1 << 20
ALIAS = re.compile(r"^[A-Za-z0-9_-]+$")
_METHOD_ENUMS = {"lora": pb.TRAINING_METHOD_LORA, "qlora": pb.TRAINING_METHOD_QLORA, "dora": pb.TRAINING_METHOD_DORA}


def _required(value: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise InvalidArgument.of(field, "is required")
    return value


def _timestamp(value: Any) -> Timestamp:
    stamp = Timestamp()
    if value is not None:
        stamp.FromDatetime(value)
    return stamp


def _adapter_version(record: Any) -> pb.AdapterVersion:
    """An AdapterVersionRecord of lorag_training.registry as the API's AdapterVersion."""
    lineage_tags: dict[str, str] = dict(record.lineage or {})
    lineage = pb.AdapterLineage(
        dataset_name=lineage_tags.get("dataset_name", ""),
        dataset_version=lineage_tags.get("dataset_version", ""),
        base_model=lineage_tags.get("base_model", ""),
        base_model_revision=lineage_tags.get("base_model_revision", ""),
        job_id=lineage_tags.get("job_id", ""),
        mlflow_run_id=lineage_tags.get("mlflow_run_id", "") or getattr(record, "run_id", "") or "",
        method=_METHOD_ENUMS.get(lineage_tags.get("method", "").lower(), pb.TRAINING_METHOD_UNSPECIFIED),
    )
    raw_hp = lineage_tags.get("hyperparameters")
    if raw_hp:
        try:
            from google.protobuf.json_format import ParseDict

            ParseDict(json.loads(raw_hp), lineage.hyperparameters, ignore_unknown_fields=True)
        except (ValueError, TypeError, AttributeError):
            pass
    for key, value in lineage_tags.items():
        if key.startswith("eval_") or key == "perplexity":
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(number):
                lineage.eval_metrics[key] = number
    version = pb.AdapterVersion(
        name=record.name, version=str(record.version), aliases=list(record.aliases or []),
        source_uri=record.source_uri or "", lineage=lineage, description=record.description or "",
        tags={str(k): str(v) for k, v in (record.tags or {}).items()},
    )
    if getattr(record, "create_time", None) is not None:
        version.create_time.CopyFrom(_timestamp(record.create_time))
    return version


def _check_alias(alias: str) -> str:
    alias = alias.strip()
    if not alias:
        raise InvalidArgument.of("alias", "is required")
    if alias.lower() == "latest":
        raise InvalidArgument.of("alias", "\"latest\" is reserved: it always means the newest version")
    if alias.isdigit():
        raise InvalidArgument.of("alias", "must not be all digits (that reads as a version)")
    if not ALIAS.match(alias):
        raise InvalidArgument.of("alias", "may hold only letters, digits, '-' and '_'")
    if re.fullmatch(r"[vV]\d+", alias):
        raise InvalidArgument.of("alias", "must not be 'v' followed by digits (MLflow reads that as a version)")
    return alias


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    """Serves datasets, jobs and the adapter registry of one node."""

    def __init__(self, settings: TrainingSettings, datasets: DatasetStore, jobs: JobStore, scheduler: Scheduler,
                 devices: NodeDevices, tracer: trace.Tracer, registry_factory: Any = None) -> None:
        self.settings = settings
        self.datasets = datasets
        self.jobs = jobs
        self.scheduler = scheduler
        self.devices = devices
        self.tracer = tracer
        self._registry_factory = registry_factory
        self._registry: Any = None

    # --- datasets ---------------------------------------------------------------------------------------------

    async def UploadDataset(self, request_iterator: AsyncIterator[pb.UploadDatasetRequest],  # noqa: N802
                            context: grpc.aio.ServicerContext) -> pb.UploadDatasetResponse:
        metadata: pb.DatasetMetadata | None = None
        chunks: list[bytes] = []
        size = 0
        async for message in request_iterator:
            kind = message.WhichOneof("payload")
            if kind == "metadata":
                if metadata is not None:
                    raise InvalidArgument.of("metadata", "was sent twice; send it once, in the first message")
                metadata = message.metadata
                self._check_metadata(metadata)
            elif kind == "data":
                if metadata is None:
                    raise InvalidArgument.of("metadata", "the first message must carry the dataset's metadata")
                if len(message.data) > MAX_CHUNK:
                    raise InvalidArgument.of("data", f"a chunk may hold at most {MAX_CHUNK} bytes "
                                                     f"(got {len(message.data)})")
                size += len(message.data)
                if size > self.settings.max_dataset_bytes:
                    raise ResourceExhausted(
                        message=f"the dataset exceeds the service's limit of {self.settings.max_dataset_bytes} bytes",
                        reason="DATASET_TOO_LARGE", metadata={"limit_bytes": str(self.settings.max_dataset_bytes)},
                    )
                chunks.append(message.data)
            else:
                raise InvalidArgument.of("payload", "each message must carry metadata or data")
        if metadata is None:
            raise InvalidArgument.of("metadata", "the upload must start with the dataset's metadata")
        if size == 0:
            raise InvalidArgument.of("data", "no bytes were sent")
        data = b"".join(chunks)
        fmt = FORMATS[metadata.format]
        base_model = metadata.base_model.strip() or self.settings.base_model
        max_length = metadata.max_length if metadata.HasField("max_length") else 2048
        with self.tracer.start_as_current_span("dataset.validate") as span:
            span.set_attribute("lorag.training.dataset.name", metadata.name)
            span.set_attribute("lorag.training.dataset.format", fmt)
            span.set_attribute("lorag.training.dataset.bytes", size)
            validated, stats = await asyncio.to_thread(analyse, data, fmt, base_model, max_length)
            span.set_attribute("lorag.training.dataset.rows", validated.row_count)
            span.set_attribute("lorag.training.dataset.errors", validated.error_count)
            span.set_attribute("lorag.training.dataset.tokens", stats.total_tokens)
        dataset = to_proto(validated, stats, metadata.name, metadata.description)
        if metadata.validate_only:
            return pb.UploadDatasetResponse(dataset=dataset, created=False)
        dataset.version = validated.version
        with self.tracer.start_as_current_span("dataset.store") as span:
            span.set_attribute("lorag.training.dataset.version", dataset.version)
            stored, created = await self.datasets.save(dataset, validated)
            span.set_attribute("lorag.training.dataset.created", created)
        log.info("dataset uploaded", name=stored.name, version=stored.version, rows=stored.row_count,
                 errors=stored.validation_report.error_count, created=created)
        return pb.UploadDatasetResponse(dataset=stored, created=created)

    @staticmethod
    def _check_metadata(metadata: pb.DatasetMetadata) -> None:
        if not NAME_PATTERN.match(metadata.name):
            raise InvalidArgument.of("metadata.name", "must be 1 to 128 letters, digits, '.', '-' or '_'")
        if metadata.format not in FORMATS:
            raise InvalidArgument.of("metadata.format", "must be DATASET_FORMAT_CHAT or DATASET_FORMAT_COMPLETION")
        if metadata.HasField("max_length") and not 1 <= metadata.max_length <= MAX_DATASET_MAX_LENGTH:
            raise InvalidArgument.of("metadata.max_length", f"must be from 1 to {MAX_DATASET_MAX_LENGTH}")

    async def GetDataset(self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext) -> pb.GetDatasetResponse:  # noqa: N802
        name = _required(request.name, "name")
        return pb.GetDatasetResponse(dataset=await self.datasets.get(name, request.version))

    async def ListDatasets(self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext) -> pb.ListDatasetsResponse:  # noqa: N802
        size = page_size(request.page_size)
        query = f"datasets:{request.name}"
        offset = decode_page_token(request.page_token, query)
        found, more = await self.datasets.list(request.name, size, offset)
        return pb.ListDatasetsResponse(datasets=found,
                                       next_page_token=encode_page_token(offset + size, query) if more else "")

    # --- jobs -------------------------------------------------------------------------------------------------

    async def CreateTrainingJob(self, request: pb.CreateTrainingJobRequest,  # noqa: N802
                                context: grpc.aio.ServicerContext) -> pb.CreateTrainingJobResponse:
        request_id = request.request_id.strip()
        if len(request_id) > 256:
            raise InvalidArgument.of("request_id", "must be at most 256 characters")
        request_hash = hashlib.sha256(request.training_job.SerializeToString(deterministic=True)).hexdigest()
        if request_id:
            existing = await self.jobs.by_request(request_id)
            if existing is not None:
                job, stored_hash = existing
                if stored_hash == request_hash:
                    return pb.CreateTrainingJobResponse(training_job=job)
                raise AlreadyExists(
                    message=f"request_id {request_id!r} was already used for a different job ({job.id})",
                    reason="REQUEST_ID_REUSED", metadata={"request_id": request_id, "job_id": job.id},
                )
        job = await resolve_job(request.training_job, self.datasets, self.devices)
        with self.tracer.start_as_current_span("training_job") as span:
            span.set_attribute("lorag.training.job_id", job.id)
            span.set_attribute("lorag.training.adapter_name", job.adapter_name)
            span.set_attribute("lorag.training.dataset_version", job.dataset_version)
            span.set_attribute("lorag.training.method", pb.TrainingMethod.Name(job.method))
            span.set_attribute("lorag.training.gpu_count", job.resources.gpu_count)
            job.trace_id = format(span.get_span_context().trace_id, "032x")
            carrier: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(carrier)
            job.create_time.GetCurrentTime()
            job.update_time.CopyFrom(job.create_time)
            stored, created = await self.jobs.create(job, request_id, request_hash, carrier.get("traceparent", ""))
        if created:
            log.info("job queued", job_id=stored.id, adapter=stored.adapter_name, priority=stored.priority)
            self.scheduler.wake()
        return pb.CreateTrainingJobResponse(training_job=stored)

    async def GetTrainingJob(self, request: pb.GetTrainingJobRequest, context: grpc.aio.ServicerContext) -> pb.GetTrainingJobResponse:  # noqa: N802
        record = await self.jobs.get(_required(request.id, "id"))
        return pb.GetTrainingJobResponse(training_job=record.job)

    async def ListTrainingJobs(self, request: pb.ListTrainingJobsRequest,  # noqa: N802
                               context: grpc.aio.ServicerContext) -> pb.ListTrainingJobsResponse:
        size = page_size(request.page_size)
        for index, state in enumerate(request.states):
            if state not in pb.TrainingJob.State.values() or state == pb.TrainingJob.STATE_UNSPECIFIED:
                raise InvalidArgument.of(f"states[{index}]", f"unknown state {state}")
        states = sorted(set(request.states))
        query = f"jobs:{states}:{request.adapter_name}"
        offset = decode_page_token(request.page_token, query)
        found, more = await self.jobs.list(states, request.adapter_name, size, offset)
        return pb.ListTrainingJobsResponse(training_jobs=found,
                                           next_page_token=encode_page_token(offset + size, query) if more else "")

    async def CancelTrainingJob(self, request: pb.CancelTrainingJobRequest,  # noqa: N802
                                context: grpc.aio.ServicerContext) -> pb.CancelTrainingJobResponse:
        job_id = _required(request.id, "id")
        with self.tracer.start_as_current_span("training_job.cancel") as span:
            span.set_attribute("lorag.training.job_id", job_id)
            record = await self.scheduler.cancel(job_id)
            span.set_attribute("lorag.training.state", pb.TrainingJob.State.Name(record.job.state))
        return pb.CancelTrainingJobResponse(training_job=record.job)

    async def WatchTrainingJob(self, request: pb.WatchTrainingJobRequest,  # noqa: N802
                               context: grpc.aio.ServicerContext) -> AsyncIterator[pb.WatchTrainingJobResponse]:
        job_id = _required(request.id, "id")
        if request.after_sequence < 0:
            raise InvalidArgument.of("after_sequence", "must be at least 0")
        record = await self.jobs.get(job_id)
        if request.after_sequence > record.last_sequence:
            raise OutOfRange(
                f"after_sequence {request.after_sequence} is beyond job {job_id}'s last event ({record.last_sequence})",
                metadata={"last_sequence": str(record.last_sequence)},
            )
        cursor = request.after_sequence
        wakeup = self.scheduler.subscribe(job_id)
        try:
            while True:
                wakeup.clear()
                events = await self.jobs.events_after(job_id, cursor)
                for event in events:
                    yield pb.WatchTrainingJobResponse(event=event)
                    cursor = event.sequence
                    if event.HasField("state_change") and event.state_change.state in TERMINAL:
                        return
                if events:
                    continue
                record = await self.jobs.get(job_id)
                if record.job.state in TERMINAL and cursor >= record.last_sequence:
                    return  # resumed after the terminal event: nothing more will come
                try:
                    await asyncio.wait_for(wakeup.wait(), 5.0)
                except TimeoutError:
                    pass
        finally:
            self.scheduler.unsubscribe(job_id, wakeup)

    async def ListCheckpoints(self, request: pb.ListCheckpointsRequest,  # noqa: N802
                              context: grpc.aio.ServicerContext) -> pb.ListCheckpointsResponse:
        job_id = _required(request.job_id, "job_id")
        size = page_size(request.page_size)
        query = f"checkpoints:{job_id}"
        offset = decode_page_token(request.page_token, query)
        found, more = await self.jobs.checkpoints(job_id, size, offset)
        return pb.ListCheckpointsResponse(checkpoints=found,
                                          next_page_token=encode_page_token(offset + size, query) if more else "")

    # --- adapter registry -------------------------------------------------------------------------------------

    def _adapters(self) -> Any:
        if self._registry is None:
            if self._registry_factory is not None:
                self._registry = self._registry_factory()
            else:
                try:
                    from lorag_training.registry import AdapterRegistry
                except ImportError as exc:
                    raise Unavailable(message=f"the adapter registry is not available: {exc}",
                                      metadata={"dependency": "mlflow"}) from exc
                self._registry = AdapterRegistry(self.settings.resolved_tracking_uri,
                                                 self.settings.resolved_registry_uri)
        return self._registry

    async def ListAdapterVersions(self, request: pb.ListAdapterVersionsRequest,  # noqa: N802
                                  context: grpc.aio.ServicerContext) -> pb.ListAdapterVersionsResponse:
        size = page_size(request.page_size)
        registry = await asyncio.to_thread(self._adapters)
        records, token = await asyncio.to_thread(registry.list_versions, request.name.strip() or None, size,
                                                 request.page_token)
        return pb.ListAdapterVersionsResponse(adapter_versions=[_adapter_version(r) for r in records],
                                              next_page_token=token or "")

    async def GetAdapterVersion(self, request: pb.GetAdapterVersionRequest,  # noqa: N802
                                context: grpc.aio.ServicerContext) -> pb.GetAdapterVersionResponse:
        reference = _required(request.reference, "reference")
        name, _, selector = reference.partition("@")
        name = name.strip()
        if not name:
            raise InvalidArgument.of("reference", "must be \"name\", \"name@alias\" or \"name@version\"")
        selector = selector.strip()
        version = selector if selector.isdigit() else None
        alias = selector if selector and not selector.isdigit() and selector.lower() != "latest" else None
        registry = await asyncio.to_thread(self._adapters)
        record = await asyncio.to_thread(registry.get, name, version, alias)
        return pb.GetAdapterVersionResponse(adapter_version=_adapter_version(record))

    async def SetAdapterAlias(self, request: pb.SetAdapterAliasRequest,  # noqa: N802
                              context: grpc.aio.ServicerContext) -> pb.SetAdapterAliasResponse:
        name = _required(request.name, "name")
        alias = _check_alias(request.alias)
        version = _required(request.version, "version")
        if not version.isdigit():
            raise InvalidArgument.of("version", "must be a decimal version number")
        registry = await asyncio.to_thread(self._adapters)
        record = await asyncio.to_thread(registry.set_alias, name, alias, version)
        log.info("adapter alias set", name=name, alias=alias, version=version)
        return pb.SetAdapterAliasResponse(adapter_version=_adapter_version(record))

    async def DeleteAdapterAlias(self, request: pb.DeleteAdapterAliasRequest,  # noqa: N802
                                 context: grpc.aio.ServicerContext) -> pb.DeleteAdapterAliasResponse:
        name = _required(request.name, "name")
        alias = _required(request.alias, "alias")
        registry = await asyncio.to_thread(self._adapters)
        await asyncio.to_thread(registry.delete_alias, name, alias)
        log.info("adapter alias deleted", name=name, alias=alias)
        return pb.DeleteAdapterAliasResponse()
