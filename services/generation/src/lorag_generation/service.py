"""The GenerationService handlers: proto in, domain call, proto out. The work is in ``backends/`` and ``adapters``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import metrics, trace

from lorag.common.v1 import common_pb2
from lorag.generation.v1 import generation_service_pb2 as pb
from lorag.generation.v1 import generation_service_pb2_grpc as pb_grpc
from lorag_core.errors import InvalidArgument
from lorag_generation.adapters import AdapterEntry, AdapterLease, AdapterManager
from lorag_generation.backends.base import (
    Finished,
    FinishReason,
    GenerationBackend,
    GenerationJob,
    StreamItem,
    TextDelta,
)
from lorag_generation.convert import check_prompt_fits, parse_input, parse_sampling

_FINISH = {
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.STOP_SEQUENCE: common_pb2.FINISH_REASON_STOP_SEQUENCE,
    FinishReason.CANCELLED: common_pb2.FINISH_REASON_CANCELLED,
}
_STATES = {
    "LOADING": pb.Adapter.STATE_LOADING,
    "LOADED": pb.Adapter.STATE_LOADED,
    "EVICTED": pb.Adapter.STATE_EVICTED,
    "FAILED": pb.Adapter.STATE_FAILED,
}


@dataclass
class _Prepared:
    job: GenerationJob
    lease: AdapterLease | None
    received_ns: int
    submitted_ns: int = 0


class GenerationMetrics:
    """The service's own instruments (the chassis adds per-RPC RED metrics)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.tokens = meter.create_counter(
            "lorag.generation.tokens", unit="{token}", description="Completion tokens generated."
        )
        self.tokens_per_second = meter.create_histogram(
            "lorag.generation.tokens_per_second", unit="{token}/s", description="Decode speed of each request."
        )
        self.batch_size = meter.create_histogram(
            "lorag.generation.batch.size", unit="{request}", description="Requests in each decode step."
        )


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def adapter_to_proto(entry: AdapterEntry) -> pb.Adapter:
    return pb.Adapter(
        name=entry.name,
        version=entry.version,
        alias=entry.alias,
        source_uri=entry.source_uri,
        base_model=entry.files.base_model,
        rank=entry.files.rank,
        lora_alpha=entry.files.lora_alpha,
        target_modules=list(entry.files.target_modules),
        state=_STATES[entry.state],
        pinned=entry.pinned,
        load_time=_timestamp(entry.load_time),
        last_used_time=_timestamp(entry.last_used_time),
        request_count=entry.request_count,
        error=entry.error,
    )


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    """Serves GenerationService from one backend (transformers or openai) and the adapter manager."""

    def __init__(self, backend: GenerationBackend, adapters: AdapterManager, instruments: GenerationMetrics) -> None:
        self._backend = backend
        self._adapters = adapters
        self._metrics = instruments
        self._tracer = trace.get_tracer("lorag.generation")

    # -- generation -------------------------------------------------------------------------------------------------

    async def _prepare(self, request: pb.GenerateRequest | pb.GenerateStreamRequest) -> _Prepared:
        received = time.perf_counter_ns()
        info = self._backend.info()
        generation_input = parse_input(request)
        sampling = parse_sampling(
            request.sampling,
            max_new_tokens_limit=info.max_new_tokens_limit,
            default_temperature=float(info.extra.get("default_temperature", "0.7")),
        )
        prompt_tokens = self._backend.count_prompt_tokens(generation_input)
        check_prompt_fits(generation_input, prompt_tokens, sampling.max_new_tokens, info.max_context_tokens)
        lease = None
        if request.adapter:
            with self._tracer.start_as_current_span("lorag.generation.resolve_adapter") as span:
                span.set_attribute("lorag.generation.adapter", request.adapter)
                lease = await self._adapters.acquire(request.adapter)
                span.set_attribute("lorag.generation.adapter.version", lease.handle.version if lease else "")
        job = GenerationJob(input=generation_input, sampling=sampling, adapter=lease.handle if lease else None)
        return _Prepared(job, lease, received)

    async def _run(self, prepared: _Prepared) -> AsyncIterator[StreamItem]:
        """The backend's items inside a domain span; the adapter lease is released however the stream ends (the
        body reaches its ``try`` before its first await, so even a call cancelled at once releases it)."""
        info = self._backend.info()
        with self._tracer.start_as_current_span("lorag.generation.generate") as span:
            span.set_attribute("lorag.generation.model", info.model)
            span.set_attribute("lorag.generation.adapter", prepared.lease.name if prepared.lease else "")
            span.set_attribute("lorag.generation.max_new_tokens", prepared.job.sampling.max_new_tokens)
            try:
                prepared.submitted_ns = time.perf_counter_ns()
                async with aclosing(self._backend.stream(prepared.job)) as items:
                    async for item in items:
                        if isinstance(item, Finished):
                            span.set_attribute("lorag.generation.prompt_tokens", item.prompt_tokens)
                            span.set_attribute("lorag.generation.completion_tokens", item.completion_tokens)
                            span.set_attribute("lorag.generation.finish_reason", item.finish_reason.value)
                            self._record(item)
                        yield item
            finally:
                if prepared.lease is not None:
                    prepared.lease.release()

    def _record(self, finished: Finished) -> None:
        self._metrics.tokens.add(finished.completion_tokens)
        if finished.inference_ns > 0 and finished.completion_tokens:
            self._metrics.tokens_per_second.record(finished.completion_tokens / (finished.inference_ns / 1e9))

    def _summary(self, prepared: _Prepared, finished: Finished) -> dict[str, Any]:
        before = prepared.submitted_ns - prepared.received_ns
        lease = prepared.lease
        return dict(
            finish_reason=_FINISH[finished.finish_reason],
            matched_stop_sequence=finished.matched_stop_sequence,
            usage=common_pb2.Usage(
                prompt_tokens=finished.prompt_tokens,
                completion_tokens=finished.completion_tokens,
                total_tokens=finished.prompt_tokens + finished.completion_tokens,
            ),
            timing=common_pb2.Timing(
                queue_ns=before + finished.queue_ns,
                inference_ns=finished.inference_ns,
                total_ns=time.perf_counter_ns() - prepared.received_ns,
                time_to_first_token_ns=(before + finished.time_to_first_token_ns)
                if finished.time_to_first_token_ns
                else 0,
            ),
            model=self._backend.info().model,
            adapter=common_pb2.AdapterReference(name=lease.name, version=lease.handle.version, alias=lease.handle.alias)
            if lease
            else None,
        )

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        prepared = await self._prepare(request)
        parts: list[str] = []
        finished: Finished | None = None
        async for item in self._run(prepared):
            if isinstance(item, TextDelta):
                parts.append(item.text)
            else:
                finished = item
        assert finished is not None, "a backend stream ends with Finished"
        return pb.GenerateResponse(text="".join(parts), **self._summary(prepared, finished))

    async def GenerateStream(
        self, request: pb.GenerateStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        prepared = await self._prepare(request)
        async for item in self._run(prepared):
            if isinstance(item, TextDelta):
                yield pb.GenerateStreamResponse(
                    delta=common_pb2.TokenDelta(text=item.text, token_count=item.token_count)
                )
            else:
                yield pb.GenerateStreamResponse(summary=pb.GenerationSummary(**self._summary(prepared, item)))

    # -- adapters and model -----------------------------------------------------------------------------------------

    async def ListAdapters(
        self, request: pb.ListAdaptersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAdaptersResponse:
        entries, next_token = self._adapters.list(request.page_size, request.page_token)
        return pb.ListAdaptersResponse(
            adapters=[adapter_to_proto(e) for e in entries],
            next_page_token=next_token,
            base_model=self._backend.info().model,
        )

    async def LoadAdapter(
        self, request: pb.LoadAdapterRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoadAdapterResponse:
        started = time.perf_counter_ns()
        source = request.WhichOneof("source")
        if source is None:
            raise InvalidArgument.of("source_uri", "set source_uri (a folder or artifact URI) or registry_reference")
        with self._tracer.start_as_current_span("lorag.generation.load_adapter") as span:
            span.set_attribute("lorag.generation.adapter", request.name)
            span.set_attribute("lorag.generation.adapter.source_kind", source)
            entry, load_ns = await self._adapters.load(
                request.name,
                source_uri=request.source_uri if source == "source_uri" else None,
                registry_reference=request.registry_reference if source == "registry_reference" else None,
                follow_alias=request.follow_alias,
                pin=request.pin,
                replace=request.replace,
            )
            span.set_attribute("lorag.generation.adapter.rank", entry.files.rank)
        return pb.LoadAdapterResponse(
            adapter=adapter_to_proto(entry),
            timing=common_pb2.Timing(inference_ns=load_ns, total_ns=time.perf_counter_ns() - started),
        )

    async def UnloadAdapter(
        self, request: pb.UnloadAdapterRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnloadAdapterResponse:
        if not request.name:
            raise InvalidArgument.of("name", "must not be empty")
        await self._adapters.unload(request.name, allow_missing=request.allow_missing)
        return pb.UnloadAdapterResponse()

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        info = self._backend.info()
        return pb.GetModelInfoResponse(
            model=info.model,
            model_revision=info.model_revision,
            backend=info.backend,
            device=info.device,
            dtype=info.dtype,
            max_context_tokens=info.max_context_tokens,
            max_new_tokens_limit=info.max_new_tokens_limit,
            has_chat_template=info.has_chat_template,
            max_loaded_adapters=info.max_loaded_adapters,
            max_lora_rank=info.max_lora_rank,
            max_batch_size=info.max_batch_size,
        )
