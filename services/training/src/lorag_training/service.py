"""The TrainingService handlers: proto in, domain call, proto out.

Field checks and conversions are in :mod:`lorag_training.convert`; the work in datasets/, jobs/ and registry.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from lorag.training.v1 import training_service_pb2 as pb
from lorag.training.v1 import training_service_pb2_grpc as pb_grpc
from lorag_core.errors import AlreadyExists, InvalidArgument, OutOfRange, ResourceExhausted
from lorag_core.telemetry import get_logger
from lorag_training import convert
from lorag_training.config import TrainingSettings
from lorag_training.datasets.store import FORMATS, DatasetStore, analyse, to_proto
from lorag_training.jobs.capacity import NodeDevices
from lorag_training.jobs.scheduler import Scheduler
from lorag_training.jobs.store import TERMINAL, JobStore
from lorag_training.jobs.validation import resolve_job
from lorag_training.registry import AdapterRegistry

log = get_logger("lorag.training.service")
MAX_CHUNK = 1024 * 1024


class TrainingServicer(pb_grpc.TrainingServiceServicer):
    """Serves datasets, jobs and the adapter registry of one node."""

    def __init__(
        self,
        settings: TrainingSettings,
        datasets: DatasetStore,
        jobs: JobStore,
        scheduler: Scheduler,
        devices: NodeDevices,
        tracer: trace.Tracer,
    ) -> None:
        self.settings = settings
        self.datasets = datasets
        self.jobs = jobs
        self.scheduler = scheduler
        self.devices = devices
        self.tracer = tracer
        # Cheap to create: MLflow is imported and connected on the registry's first call.
        self.registry = AdapterRegistry(settings.resolved_tracking_uri, settings.resolved_registry_uri)

    # --- datasets ---------------------------------------------------------------------------------------------

    async def UploadDataset(
        self,
        request_iterator: AsyncIterator[pb.UploadDatasetRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.UploadDatasetResponse:
        metadata: pb.DatasetMetadata | None = None
        chunks: list[bytes] = []
        size = 0
        async for message in request_iterator:
            kind = message.WhichOneof("payload")
            if kind == "metadata":
                if metadata is not None:
                    raise InvalidArgument.of("metadata", "was sent twice; send it once, in the first message")
                metadata = message.metadata
                convert.check_dataset_metadata(metadata)
            elif kind == "data":
                if metadata is None:
                    raise InvalidArgument.of("metadata", "the first message must carry the dataset's metadata")
                if len(message.data) > MAX_CHUNK:
                    raise InvalidArgument.of(
                        "data", f"a chunk may hold at most {MAX_CHUNK} bytes (got {len(message.data)})"
                    )
                size += len(message.data)
                if size > self.settings.max_dataset_bytes:
                    raise ResourceExhausted(
                        message=f"the dataset exceeds the service's limit of {self.settings.max_dataset_bytes} bytes",
                        reason="DATASET_TOO_LARGE",
                        metadata={"limit_bytes": str(self.settings.max_dataset_bytes)},
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
        log.info(
            "dataset uploaded",
            name=stored.name,
            version=stored.version,
            rows=stored.row_count,
            errors=stored.validation_report.error_count,
            created=created,
        )
        return pb.UploadDatasetResponse(dataset=stored, created=created)

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDatasetResponse:
        name = convert.required(request.name, "name")
        return pb.GetDatasetResponse(dataset=await self.datasets.get(name, request.version))

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatasetsResponse:
        page = convert.OffsetPage.of(request, "ListDatasets", request.name)
        found, more = await self.datasets.list_page(request.name, page.size, page.offset)
        return pb.ListDatasetsResponse(datasets=found, next_page_token=page.next_token(more))

    # --- jobs -------------------------------------------------------------------------------------------------

    async def CreateTrainingJob(
        self,
        request: pb.CreateTrainingJobRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.CreateTrainingJobResponse:
        request_id = convert.request_id(request.request_id)
        request_hash = hashlib.sha256(request.training_job.SerializeToString(deterministic=True)).hexdigest()
        if request_id:
            existing = await self.jobs.by_request(request_id)
            if existing is not None:
                job, stored_hash = existing
                if stored_hash == request_hash:
                    return pb.CreateTrainingJobResponse(training_job=job)
                raise AlreadyExists(
                    message=f"request_id {request_id!r} was already used for a different job ({job.id})",
                    reason="REQUEST_ID_REUSED",
                    metadata={"request_id": request_id, "job_id": job.id},
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

    async def GetTrainingJob(
        self, request: pb.GetTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTrainingJobResponse:
        record = await self.jobs.get(convert.required(request.id, "id"))
        return pb.GetTrainingJobResponse(training_job=record.job)

    async def ListTrainingJobs(
        self,
        request: pb.ListTrainingJobsRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ListTrainingJobsResponse:
        states = convert.job_states(request.states)
        page = convert.OffsetPage.of(request, "ListTrainingJobs", f"{states}:{request.adapter_name}")
        found, more = await self.jobs.list_page(states, request.adapter_name, page.size, page.offset)
        return pb.ListTrainingJobsResponse(training_jobs=found, next_page_token=page.next_token(more))

    async def CancelTrainingJob(
        self,
        request: pb.CancelTrainingJobRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.CancelTrainingJobResponse:
        job_id = convert.required(request.id, "id")
        with self.tracer.start_as_current_span("training_job.cancel") as span:
            span.set_attribute("lorag.training.job_id", job_id)
            record = await self.scheduler.cancel(job_id)
            span.set_attribute("lorag.training.state", pb.TrainingJob.State.Name(record.job.state))
        return pb.CancelTrainingJobResponse(training_job=record.job)

    async def WatchTrainingJob(
        self,
        request: pb.WatchTrainingJobRequest,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.WatchTrainingJobResponse]:
        job_id = convert.required(request.id, "id")
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

    async def ListCheckpoints(
        self,
        request: pb.ListCheckpointsRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ListCheckpointsResponse:
        job_id = convert.required(request.job_id, "job_id")
        page = convert.OffsetPage.of(request, "ListCheckpoints", job_id)
        found, more = await self.jobs.checkpoints(job_id, page.size, page.offset)
        return pb.ListCheckpointsResponse(checkpoints=found, next_page_token=page.next_token(more))

    # --- adapter registry -------------------------------------------------------------------------------------

    async def ListAdapterVersions(
        self,
        request: pb.ListAdapterVersionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.ListAdapterVersionsResponse:
        records, token = await asyncio.to_thread(
            self.registry.list_versions, request.name.strip() or None, request.page_size, request.page_token
        )
        return pb.ListAdapterVersionsResponse(
            adapter_versions=[convert.adapter_version(r) for r in records], next_page_token=token
        )

    async def GetAdapterVersion(
        self,
        request: pb.GetAdapterVersionRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.GetAdapterVersionResponse:
        name, version, alias = convert.adapter_reference(request.reference)
        record = await asyncio.to_thread(self.registry.get, name, version, alias)
        return pb.GetAdapterVersionResponse(adapter_version=convert.adapter_version(record))

    async def SetAdapterAlias(
        self,
        request: pb.SetAdapterAliasRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.SetAdapterAliasResponse:
        name = convert.required(request.name, "name")
        alias = convert.alias(request.alias)
        version = convert.version_number(request.version)
        record = await asyncio.to_thread(self.registry.set_alias, name, alias, version)
        log.info("adapter alias set", name=name, alias=alias, version=version)
        return pb.SetAdapterAliasResponse(adapter_version=convert.adapter_version(record))

    async def DeleteAdapterAlias(
        self,
        request: pb.DeleteAdapterAliasRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.DeleteAdapterAliasResponse:
        name = convert.required(request.name, "name")
        alias = convert.required(request.alias, "alias")
        await asyncio.to_thread(self.registry.delete_alias, name, alias)
        log.info("adapter alias deleted", name=name, alias=alias)
        return pb.DeleteAdapterAliasResponse()
