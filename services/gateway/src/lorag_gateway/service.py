"""The GatewayService handlers: ingest, delete, retrieve, and answer questions (Ask, AskStream).

Handlers convert at the edge and delegate: ingest to :class:`~lorag_gateway.ingest.pipeline.IngestPipeline`,
questions to :class:`~lorag_gateway.ask.pipeline.AskPipeline`, the rest to the indexer and retrieval services.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace

from lorag.common.v1 import common_pb2
from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from lorag_client import IndexerClient, RetrievalClient
from lorag_client.indexer import python_value
from lorag_core.errors import FieldViolation, InvalidArgument
from lorag_gateway.ask.pipeline import AnswerDelta, AnswerSummary, AskInput, AskPipeline
from lorag_gateway.ingest.chunking import ChunkingStrategy
from lorag_gateway.ingest.documents import DocumentInput, collection_violation, document_id_violation, tenant_violation
from lorag_gateway.ingest.pipeline import IngestItem, IngestPipeline, IngestResult

MAX_DELETE_IDS = 1000

_STRATEGIES = {
    pb.CHUNKING_STRATEGY_UNSPECIFIED: None,
    pb.CHUNKING_STRATEGY_RECURSIVE: ChunkingStrategy.RECURSIVE,
    pb.CHUNKING_STRATEGY_TOKEN: ChunkingStrategy.TOKEN,
}
_OUTCOMES = {
    "WRITTEN": pb.INGEST_OUTCOME_WRITTEN,
    "UNCHANGED": pb.INGEST_OUTCOME_UNCHANGED,
    "FAILED": pb.INGEST_OUTCOME_FAILED,
}


def ingest_item(index: int, request: pb.IngestDocumentsRequest) -> IngestItem:
    """The domain view of one streamed document."""
    document = request.document
    content = document.data if document.WhichOneof("content") == "data" else document.text
    chunking = request.chunking
    return IngestItem(
        index=index,
        document=DocumentInput(
            tenant=document.tenant,
            collection=document.collection,
            content=content,
            mime_type=document.mime_type,
            id=document.id,
            source_uri=document.source_uri,
            title=document.title,
            metadata={key: python_value(value) for key, value in document.metadata.items()},
        ),
        strategy=_STRATEGIES.get(chunking.strategy),
        max_tokens=chunking.max_tokens if chunking.HasField("max_tokens") else None,
        overlap_tokens=chunking.overlap_tokens if chunking.HasField("overlap_tokens") else None,
        force=request.force,
    )


def result_message(result: IngestResult) -> pb.IngestDocumentsResponse:
    return pb.IngestDocumentsResponse(
        result=pb.DocumentResult(
            index=result.index,
            document_id=result.document_id,
            source_uri=result.source_uri,
            outcome=_OUTCOMES[result.outcome],
            reason=result.reason,
            error_code=result.error_code,
            chunk_count=result.chunk_count,
            content_sha256=result.content_sha256,
            elapsed_ns=result.elapsed_ns,
        )
    )


def ask_input(request: pb.AskRequest | pb.AskStreamRequest) -> AskInput:
    """The domain view of a question; the retrieval options and sampling are passed on as they are."""
    which = request.WhichOneof("template")
    return AskInput(
        question=request.question,
        tenant=request.tenant,
        collection=request.collection,
        retrieval=request.retrieval,
        adapter=request.adapter,
        sampling=request.sampling,
        template_name=request.template_name if which == "template_name" else None,
        template_text=request.template_text if which == "template_text" else None,
        answer_without_context=request.answer_without_context,
    )


def citation_messages(summary: AnswerSummary) -> list[pb.Citation]:
    return [
        pb.Citation(
            passage_number=p.number,
            document_id=p.document_id,
            chunk_id=p.chunk_id,
            char_start=p.char_start,
            char_end=p.char_end,
            score=p.score,
            title=p.title,
            source_uri=p.source_uri,
            text=p.text,
            cited_in_answer=p.number in summary.cited,
        )
        for p in summary.passages
    ]


def summary_fields(summary: AnswerSummary) -> dict[str, Any]:
    """The fields AskResponse and AskSummary share, as keyword arguments of either."""
    timing = pb.AskTiming(
        retrieve_ns=summary.retrieve_ns,
        generate_ns=summary.generate_ns,
        time_to_first_token_ns=summary.time_to_first_token_ns,
        total_ns=summary.total_ns,
        retrieval=summary.retrieval_timing,
        generation=summary.generation_timing,
    )
    return {
        "citations": citation_messages(summary),
        "no_context": summary.no_context,
        "finish_reason": summary.finish_reason,
        "usage": common_pb2.Usage(
            prompt_tokens=summary.prompt_tokens,
            completion_tokens=summary.completion_tokens,
            total_tokens=summary.prompt_tokens + summary.completion_tokens,
        ),
        "timing": timing,
        "model": summary.model,
        "adapter": summary.adapter,
        "degraded": bool(summary.degradations),
        "degradations": summary.degradations,
    }


def _scope_violations(tenant: str, collection: str) -> list[FieldViolation]:
    return [v for v in (tenant_violation(tenant), collection_violation(collection)) if v is not None]


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """Ingest, delete, retrieve and ask for client applications."""

    def __init__(
        self,
        pipeline: IngestPipeline,
        asker: AskPipeline,
        indexer: IndexerClient,
        retrieval: RetrievalClient,
        ingest_concurrency: int,
    ) -> None:
        self._pipeline = pipeline
        self._asker = asker
        self._indexer = indexer
        self._retrieval = retrieval
        self._concurrency = ingest_concurrency

    async def IngestDocuments(
        self, request_iterator: AsyncIterator[pb.IngestDocumentsRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.IngestDocumentsResponse]:
        """Process up to ``ingest_concurrency`` documents at once; answer each as it finishes; then the summary."""
        started = time.perf_counter_ns()
        done: asyncio.Queue[IngestResult | BaseException | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self._concurrency)
        workers: set[asyncio.Task[None]] = set()

        async def work(item: IngestItem) -> None:
            try:
                done.put_nowait(await self._pipeline.ingest(item))
            finally:
                slots.release()

        async def read() -> None:
            try:
                index = 0
                async for request in request_iterator:
                    await slots.acquire()  # back-pressure: read the next document only when a slot frees
                    task = asyncio.create_task(work(ingest_item(index, request)))
                    workers.add(task)
                    task.add_done_callback(workers.discard)
                    index += 1
                await asyncio.gather(*list(workers))
                done.put_nowait(None)
            except BaseException as error:
                done.put_nowait(error)

        reader = asyncio.create_task(read())
        summary = pb.IngestSummary()
        try:
            while (item := await done.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                summary.document_count += 1
                summary.chunk_count += item.chunk_count if item.outcome == "WRITTEN" else 0
                summary.usage.prompt_tokens += item.embedded_tokens
                if item.outcome == "WRITTEN":
                    summary.written_count += 1
                elif item.outcome == "UNCHANGED":
                    summary.unchanged_count += 1
                else:
                    summary.failed_count += 1
                yield result_message(item)
        finally:
            reader.cancel()
            for task in list(workers):
                task.cancel()
        summary.usage.total_tokens = summary.usage.prompt_tokens
        summary.elapsed_ns = time.perf_counter_ns() - started
        yield pb.IngestDocumentsResponse(summary=summary)

    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentsResponse:
        violations = _scope_violations(request.tenant, request.collection)
        if not request.document_ids:
            violations.append(FieldViolation("document_ids", "at least one document id is required"))
        elif len(request.document_ids) > MAX_DELETE_IDS:
            violations.append(FieldViolation("document_ids", f"at most {MAX_DELETE_IDS} ids per request"))
        violations += [
            v
            for i, document_id in enumerate(request.document_ids)
            if (v := document_id_violation(document_id, f"document_ids[{i}]")) is not None
        ]
        if violations:
            raise InvalidArgument(message=violations[0].description, violations=violations)
        deleted = await self._indexer.delete_documents(request.collection, request.tenant, request.document_ids)
        return pb.DeleteDocumentsResponse(
            deleted_document_count=deleted.deleted_document_count, deleted_chunk_count=deleted.deleted_chunk_count
        )

    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext) -> pb.RetrieveResponse:
        started = time.perf_counter_ns()
        span = trace.get_current_span()
        span.set_attribute("lorag.tenant", request.tenant)
        span.set_attribute("lorag.collection", request.collection)
        span.set_attribute("lorag.top_k", request.options.top_k)
        found = await self._retrieval.retrieve(
            request.query, tenant=request.tenant, collection=request.collection, options=request.options
        )
        return pb.RetrieveResponse(
            chunks=found.chunks,
            reranked=found.reranked,
            mmr_applied=found.mmr_applied,
            degraded=found.degraded,
            degradations=found.degradations,
            candidate_count=found.candidate_count,
            embedding_model=found.embedding_model,
            reranker_model=found.reranker_model,
            retrieval_timing=found.timing,
            total_ns=time.perf_counter_ns() - started,
        )

    async def Ask(self, request: pb.AskRequest, context: grpc.aio.ServicerContext) -> pb.AskResponse:
        """AskStream's flow, collected into one response."""
        summary = None
        async for item in self._asker.run(ask_input(request)):
            if isinstance(item, AnswerSummary):
                summary = item
        assert summary is not None, "the ask pipeline always ends with a summary"
        return pb.AskResponse(answer=summary.answer, **summary_fields(summary))

    async def AskStream(
        self, request: pb.AskStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AskStreamResponse]:
        """Forward each delta as it arrives, then the summary; a cancelled call cancels the generation call."""
        items = self._asker.run(ask_input(request))
        try:
            async for item in items:
                if isinstance(item, AnswerDelta):
                    yield pb.AskStreamResponse(
                        delta=common_pb2.TokenDelta(text=item.text, token_count=item.token_count)
                    )
                else:
                    yield pb.AskStreamResponse(summary=pb.AskSummary(**summary_fields(item)))
        finally:
            await items.aclose()  # runs the pipeline's cleanup (cancelling generation) now, not at garbage collection


__all__ = ["GatewayServicer"]
