"""Ingest one document end to end: prepare (parse, chunk, hash) → unchanged? → embed → index.

Each stage is a span and a duration in ``lorag.gateway.ingest.stage.duration`` (by stage), which is how the ingest
benchmark reports the share of time in each stage. A document's failure is its own: it becomes a FAILED result
with the error's code and reason, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Any

import grpc
from opentelemetry import metrics, trace

from lorag.indexer.v1 import indexer_service_pb2 as indexer_pb
from lorag_client import EmbeddingClient, IndexerClient
from lorag_client.indexer import chunk_record
from lorag_core import names
from lorag_core.errors import LoragError
from lorag_core.telemetry import get_logger

from .chunking import Chunker
from .documents import DocumentInput, PreparedDocument, prepare_document

log = get_logger("lorag.gateway.ingest")
tracer = trace.get_tracer("lorag.gateway.ingest")


@dataclass(frozen=True)
class IngestResult:
    """What happened to one document: ``outcome`` is WRITTEN, UNCHANGED or FAILED."""

    index: int
    document_id: str
    source_uri: str
    outcome: str
    chunk_count: int = 0
    content_sha256: str = ""
    embedded_tokens: int = 0
    reason: str = ""
    error_code: str = ""
    elapsed_ns: int = 0


@dataclass(frozen=True)
class IngestItem:
    """One document of the stream with its chunking options (``None`` = the contract's default)."""

    index: int
    document: DocumentInput
    strategy: Any = None
    max_tokens: int | None = None
    overlap_tokens: int | None = None
    force: bool = False


class IngestPipeline:
    """Shared by every ingest stream of a gateway: the clients, the base chunker and the known collections."""

    def __init__(
        self,
        embedding: EmbeddingClient,
        indexer: IndexerClient,
        chunker: Chunker,
        executor: Executor,
        *,
        max_document_bytes: int,
        embed_batch_size: int,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._embedding = embedding
        self._indexer = indexer
        self._chunker = chunker
        self._executor = executor
        self._max_bytes = max_document_bytes
        self._embed_batch_size = embed_batch_size
        self._collections: set[str] = set()
        self._collection_lock = asyncio.Lock()
        self._embedding_info: Any = None
        meter = meter or metrics.get_meter("lorag.gateway")
        self._stage_duration = meter.create_histogram(
            "lorag.gateway.ingest.stage.duration", unit="s", description="Time per ingest stage and document."
        )
        self._documents = meter.create_counter(
            "lorag.gateway.ingest.documents", unit="{document}", description="Documents ingested, by outcome."
        )
        self._chunks = meter.create_counter(
            "lorag.gateway.ingest.chunks", unit="{chunk}", description="Chunks written to the index."
        )

    async def ingest(self, item: IngestItem) -> IngestResult:
        """Ingest one document; never raises for the document's own problems (they become FAILED)."""
        started = time.perf_counter_ns()
        document = item.document
        document_id, source_uri = document.id, document.source_uri
        attributes = {"lorag.tenant": document.tenant, "lorag.collection": document.collection}
        with tracer.start_as_current_span("ingest.document", attributes=attributes) as span:
            try:
                prepared = await self._stage("prepare", self._prepare, item)
                document_id = prepared.id
                span.set_attribute("lorag.chunks", len(prepared.chunks))
                await self._stage("collection", self._ensure_collection, prepared.collection)
                if not item.force and await self._stage("state", self._unchanged, prepared):
                    result = IngestResult(
                        item.index, prepared.id, source_uri, "UNCHANGED", len(prepared.chunks), prepared.content_sha256
                    )
                else:
                    vectors, tokens = await self._stage("embed", self._embed, prepared)
                    await self._stage("index", self._index, prepared, vectors)
                    self._chunks.add(len(prepared.chunks), attributes)
                    result = IngestResult(
                        item.index,
                        prepared.id,
                        source_uri,
                        "WRITTEN",
                        len(prepared.chunks),
                        prepared.content_sha256,
                        embedded_tokens=tokens,
                    )
            except LoragError as error:
                span.set_attribute("lorag.error_code", error.code.name)
                result = IngestResult(
                    item.index, document_id, source_uri, "FAILED", reason=error.message, error_code=error.code.name
                )
                log.warning("document failed", document_id=document_id, code=error.code.name, reason=error.reason)
        self._documents.add(1, {**attributes, "outcome": result.outcome})
        return replace(result, elapsed_ns=time.perf_counter_ns() - started)

    async def _stage(self, name: str, step: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        with tracer.start_as_current_span(f"ingest.{name}"):
            try:
                return await step(*args)
            finally:
                self._stage_duration.record(time.perf_counter() - started, {"stage": name})

    async def _prepare(self, item: IngestItem) -> PreparedDocument:
        chunker = self._chunker.with_options(item.strategy, item.max_tokens, item.overlap_tokens)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: prepare_document(item.document, chunker, max_bytes=self._max_bytes)
        )

    async def embedding_info(self) -> Any:
        if self._embedding_info is None:
            self._embedding_info = await self._embedding.info()
        return self._embedding_info

    async def _ensure_collection(self, collection: str) -> None:
        """Create the collection on first use, sized for the embedding model's vectors."""
        name = names.normalize_collection(collection)
        if name in self._collections:
            return
        async with self._collection_lock:
            if name in self._collections:
                return
            info = await self.embedding_info()
            try:
                await self._indexer.get_collection(name)
            except LoragError as missing:
                if missing.code != grpc.StatusCode.NOT_FOUND:
                    raise
                try:
                    await self._indexer.create_collection(name, info.dimensions, embedding_model=info.model)
                except LoragError as race:  # another stream may have created it first
                    if race.code != grpc.StatusCode.ALREADY_EXISTS:
                        raise
            self._collections.add(name)

    async def _unchanged(self, prepared: PreparedDocument) -> bool:
        (state,) = await self._indexer.get_document_states(prepared.collection, prepared.tenant, [prepared.id])
        return state.exists and state.content_sha256 == prepared.content_sha256

    async def _embed(self, prepared: PreparedDocument) -> tuple[list[list[float]], int]:
        texts = [chunk.text for chunk in prepared.chunks]
        size = self._embed_batch_size
        responses = await asyncio.gather(
            *(self._embedding.embed(texts[i : i + size]) for i in range(0, len(texts), size))
        )
        vectors = [list(e.values) for response in responses for e in response.embeddings]
        return vectors, sum(response.usage.prompt_tokens for response in responses)

    async def _index(self, prepared: PreparedDocument, vectors: list[list[float]]) -> None:
        records: list[indexer_pb.ChunkRecord] = [
            chunk_record(
                chunk.id,
                prepared.id,
                chunk.text,
                vector,
                chunk_index=chunk.index,
                char_start=chunk.char_start,
                char_end=chunk.char_end,
                token_count=chunk.token_count,
                title=prepared.title,
                source_uri=prepared.source_uri,
                content_sha256=prepared.content_sha256,
                metadata=prepared.metadata,
            )
            for chunk, vector in zip(prepared.chunks, vectors, strict=True)
        ]
        await self._indexer.replace_document(prepared.collection, prepared.tenant, records)
