"""The GatewayService handlers: ingest, delete and retrieve (Ask and AskStream arrive with the generation service).

Handlers convert at the edge and delegate: ingest to :class:`~lorag_gateway.ingest.pipeline.IngestPipeline`,
the rest to the indexer and retrieval services.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from lorag.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from lorag_client import IndexerClient, RetrievalClient
from lorag_client.indexer import python_value
from lorag_core.downstream import downstream_errors
from lorag_core.errors import FieldViolation, InvalidArgument
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


def _scope_violations(tenant: str, collection: str) -> list[FieldViolation]:
    return [v for v in (tenant_violation(tenant), collection_violation(collection)) if v is not None]


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """Ingest, delete and retrieve for client applications."""

    def __init__(
        self, pipeline: IngestPipeline, indexer: IndexerClient, retrieval: RetrievalClient, ingest_concurrency: int
    ) -> None:
        self._pipeline = pipeline
        self._indexer = indexer
        self._retrieval = retrieval
        self._concurrency = ingest_concurrency

    async def IngestDocuments(  # noqa: N802
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
            except BaseException as error:  # noqa: BLE001 - handed to the response side
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

    async def DeleteDocuments(  # noqa: N802
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
        async with downstream_errors("indexer"):
            deleted = await self._indexer.delete_documents(request.collection, request.tenant, request.document_ids)
        return pb.DeleteDocumentsResponse(
            deleted_document_count=deleted.deleted_document_count, deleted_chunk_count=deleted.deleted_chunk_count
        )

    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext) -> pb.RetrieveResponse:  # noqa: N802
        started = time.perf_counter_ns()
        async with downstream_errors("retrieval"):
            found = await self._retrieval.stub.Retrieve(
                retrieval_pb.RetrieveRequest(
                    query=request.query, tenant=request.tenant, collection=request.collection, options=request.options
                )
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


__all__ = ["GatewayServicer"]
