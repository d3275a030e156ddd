"""Client for the training service: datasets, training jobs and the adapter registry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Literal

from lorag.training.v1 import training_service_pb2 as pb
from lorag.training.v1 import training_service_pb2_grpc as pb_grpc
from lorag_client.base import ServiceClient
from lorag_core.errors import Unavailable

DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the stack's packaged default (lorag_models)
CHUNK_BYTES = 1024 * 1024  # the service's per-message limit for dataset pieces
_FORMATS = {"chat": pb.DATASET_FORMAT_CHAT, "completion": pb.DATASET_FORMAT_COMPLETION}
_METHODS = {"lora": pb.TRAINING_METHOD_LORA, "qlora": pb.TRAINING_METHOD_QLORA, "dora": pb.TRAINING_METHOD_DORA}
State = pb.TrainingJob.State
TERMINAL_STATES = frozenset({State.STATE_SUCCEEDED, State.STATE_FAILED, State.STATE_CANCELLED})
_HYPERPARAMETERS = {f.name for f in pb.Hyperparameters.DESCRIPTOR.fields}


def state_name(state: int) -> str:
    """``TrainingJob.State`` without its prefix: "QUEUED", "RUNNING", "SUCCEEDED" ..."""
    return State.Name(pb.TrainingJob.State.ValueType(state)).removeprefix("STATE_")


def guess_format(path: Path | str) -> Literal["chat", "completion"]:
    """The format of a JSONL file from its first row: "messages" means chat, anything else completion."""
    import json

    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break
                return "chat" if isinstance(row, dict) and "messages" in row else "completion"
    return "chat"


class TrainingClient(ServiceClient):
    """Upload datasets, run and watch training jobs, and manage adapter versions and aliases.

    Retries follow the contract: reads, content-addressed uploads and alias moves are retried on UNAVAILABLE;
    job creation is not (it carries a fresh request_id, so a caller that retries it itself gets the same job).
    """

    service = "training"
    descriptor = pb.DESCRIPTOR.services_by_name["TrainingService"]

    _stub: pb_grpc.TrainingServiceAsyncStub

    def _make_stub(self) -> pb_grpc.TrainingServiceAsyncStub:
        return pb_grpc.TrainingServiceStub(self.channel)

    # --- datasets ---------------------------------------------------------------------------------------------

    async def upload_dataset(
        self,
        data: Path | str | bytes,
        *,
        name: str | None = None,
        format: Literal["chat", "completion"] | None = None,  # noqa: A002 - the proto's word
        base_model: str = "",
        max_length: int | None = None,
        description: str = "",
        validate_only: bool = False,
        timeout: float | None = None,
    ) -> pb.UploadDatasetResponse:
        """Upload a JSONL file (a path) or its bytes; the name defaults to the file's stem, the format to a guess.

        Rows with problems do not fail the call: see ``response.dataset.validation_report``.
        """
        if isinstance(data, (str, Path)):
            path = Path(data)
            payload = path.read_bytes()
            name = name or path.stem
            chosen = format or guess_format(path)
        else:
            payload = data
            if not name:
                raise ValueError("name= is required when uploading bytes")
            chosen = format or "chat"
        metadata = pb.DatasetMetadata(
            name=name,
            format=_FORMATS[chosen],
            base_model=base_model,
            description=description,
            validate_only=validate_only,
        )
        if max_length is not None:
            metadata.max_length = max_length

        async def messages() -> AsyncIterator[pb.UploadDatasetRequest]:
            yield pb.UploadDatasetRequest(metadata=metadata)
            for start in range(0, len(payload), CHUNK_BYTES):
                yield pb.UploadDatasetRequest(data=payload[start : start + CHUNK_BYTES])

        return await self._client_stream(self._stub.UploadDataset, messages(), timeout=timeout)

    async def get_dataset(self, name: str, version: str = "", *, timeout: float | None = None) -> pb.Dataset:
        """One dataset version (or the name's latest)."""
        response = await self._unary(
            self._stub.GetDataset, pb.GetDatasetRequest(name=name, version=version), timeout=timeout
        )
        return response.dataset

    async def list_datasets(
        self, name: str = "", *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListDatasetsResponse:
        """One page of datasets, newest first."""
        request = pb.ListDatasetsRequest(name=name, page_size=page_size, page_token=page_token)
        return await self._unary(self._stub.ListDatasets, request, timeout=timeout)

    async def iter_datasets(self, name: str = "", *, page_size: int = 100) -> AsyncIterator[pb.Dataset]:
        """Every dataset, page after page."""
        token = ""
        while True:
            page = await self.list_datasets(name, page_size=page_size, page_token=token)
            for dataset in page.datasets:
                yield dataset
            token = page.next_page_token
            if not token:
                return

    # --- jobs -------------------------------------------------------------------------------------------------

    async def create_job(
        self,
        *,
        dataset_version: str,
        adapter_name: str,
        base_model: str = "",
        method: Literal["lora", "qlora", "dora"] = "lora",
        display_name: str = "",
        priority: int = 0,
        gpu_count: int | None = None,
        target_modules: Sequence[str] = (),
        request_id: str | None = None,
        timeout: float | None = None,
        **hyperparameters: float | int,
    ) -> pb.TrainingJob:
        """Queue a job; returns it at once in QUEUED. Unknown keyword arguments must be Hyperparameters fields
        (rank, epochs, max_steps, learning_rate, batch_size, max_length, save_steps ...). ``base_model`` empty means
        the service's default model. A fresh request_id makes the call safe to retry."""
        unknown = set(hyperparameters) - _HYPERPARAMETERS
        if unknown:
            raise TypeError(f"unknown hyperparameters: {', '.join(sorted(unknown))}")
        job = pb.TrainingJob(
            base_model=base_model or DEFAULT_BASE_MODEL,
            dataset_version=dataset_version,
            adapter_name=adapter_name,
            method=_METHODS[method],
            display_name=display_name,
            priority=priority,
        )
        for key, value in hyperparameters.items():
            if value is not None:
                setattr(job.hyperparameters, key, value)
        job.hyperparameters.target_modules.extend(target_modules)
        if gpu_count is not None:
            job.resources.gpu_count = gpu_count
        request = pb.CreateTrainingJobRequest(training_job=job, request_id=request_id or str(uuid.uuid4()))
        response = await self._unary(self._stub.CreateTrainingJob, request, timeout=timeout)
        return response.training_job

    async def get_job(self, job_id: str, *, timeout: float | None = None) -> pb.TrainingJob:
        response = await self._unary(self._stub.GetTrainingJob, pb.GetTrainingJobRequest(id=job_id), timeout=timeout)
        return response.training_job

    async def list_jobs(
        self,
        *,
        states: Sequence[str | int] = (),
        adapter_name: str = "",
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> pb.ListTrainingJobsResponse:
        """One page of jobs, newest first; ``states`` as names ("RUNNING") or enum values."""
        values = [
            State.ValueType(s) if isinstance(s, int) else State.Value("STATE_" + s.upper().removeprefix("STATE_"))
            for s in states
        ]
        request = pb.ListTrainingJobsRequest(
            states=values, adapter_name=adapter_name, page_size=page_size, page_token=page_token
        )
        return await self._unary(self._stub.ListTrainingJobs, request, timeout=timeout)

    async def cancel_job(self, job_id: str, *, timeout: float | None = None) -> pb.TrainingJob:
        """Cancel a queued or running job; a running job turns CANCELLED once its worker has stopped."""
        response = await self._unary(
            self._stub.CancelTrainingJob, pb.CancelTrainingJobRequest(id=job_id), timeout=timeout
        )
        return response.training_job

    async def watch_job(self, job_id: str, after_sequence: int = 0) -> AsyncGenerator[pb.JobEvent, None]:
        """The job's events from after ``after_sequence``, live, ending after its terminal state change.

        No deadline: a job may train for hours. To resume after a lost stream, pass the last sequence received.
        """
        request = pb.WatchTrainingJobRequest(id=job_id, after_sequence=after_sequence)
        async for response in self._server_stream(self._stub.WatchTrainingJob, request, timeout=None):
            yield response.event

    async def wait_job(self, job_id: str) -> pb.TrainingJob:
        """Block until the job is terminal, resuming the watch if the stream drops; return the final job."""
        last = 0
        while True:
            try:
                async for event in self.watch_job(job_id, after_sequence=last):
                    last = event.sequence
            except Unavailable:
                pass
            job = await self.get_job(job_id)
            if job.state in TERMINAL_STATES:
                return job

    async def list_checkpoints(
        self, job_id: str, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListCheckpointsResponse:
        request = pb.ListCheckpointsRequest(job_id=job_id, page_size=page_size, page_token=page_token)
        return await self._unary(self._stub.ListCheckpoints, request, timeout=timeout)

    # --- adapters ---------------------------------------------------------------------------------------------

    async def list_adapter_versions(
        self, name: str = "", *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListAdapterVersionsResponse:
        request = pb.ListAdapterVersionsRequest(name=name, page_size=page_size, page_token=page_token)
        return await self._unary(self._stub.ListAdapterVersions, request, timeout=timeout)

    async def get_adapter_version(self, reference: str, *, timeout: float | None = None) -> pb.AdapterVersion:
        """Resolve "name", "name@alias" or "name@version"."""
        response = await self._unary(
            self._stub.GetAdapterVersion, pb.GetAdapterVersionRequest(reference=reference), timeout=timeout
        )
        return response.adapter_version

    async def set_alias(
        self, name: str, alias: str, version: str | int, *, timeout: float | None = None
    ) -> pb.AdapterVersion:
        request = pb.SetAdapterAliasRequest(name=name, alias=alias, version=str(version))
        response = await self._unary(self._stub.SetAdapterAlias, request, timeout=timeout)
        return response.adapter_version

    async def delete_alias(self, name: str, alias: str, *, timeout: float | None = None) -> None:
        await self._unary(
            self._stub.DeleteAdapterAlias, pb.DeleteAdapterAliasRequest(name=name, alias=alias), timeout=timeout
        )
