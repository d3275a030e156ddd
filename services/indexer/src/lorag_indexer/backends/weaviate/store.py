"""The indexer's store on Weaviate: the connection, schema, chunk and search modules composed behind ``ChunkStore``.

**Client.** One ``WeaviateAsyncClient`` (weaviate-client v4) per process (``connection``). Searches, batch writes,
deletes, tenant and aggregate calls go over Weaviate's gRPC API; schema calls over REST (the client offers no gRPC
for them). Outages, timeouts and health are ``connection``'s; error classification is ``errors``'; write retries
``retries``'; the layout of a collection ``schema``'s; writes and document reads ``chunks``'; queries ``search``'s;
domain filters become Weaviate filters in ``filters``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from opentelemetry import trace

from lorag_indexer.backends.weaviate.chunks import Chunks
from lorag_indexer.backends.weaviate.connection import WeaviateConnection
from lorag_indexer.backends.weaviate.retries import WriteRetries
from lorag_indexer.backends.weaviate.schema import Schema
from lorag_indexer.backends.weaviate.search import Search
from lorag_indexer.config import IndexerSettings
from lorag_indexer.domain import (
    ChunkData,
    CollectionInfo,
    DeleteResult,
    DocumentState,
    Page,
    SearchQuery,
    SearchResult,
    Tenant,
    UpsertResult,
)


class WeaviateStore:
    """A ``ChunkStore`` on Weaviate. Create, ``await start()``, use, ``await close()``."""

    def __init__(
        self,
        settings: IndexerSettings,
        *,
        tracer: trace.Tracer | None = None,
        meter: Any = None,
        on_availability: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.connection = WeaviateConnection(
            settings, tracer=tracer or trace.get_tracer("lorag.indexer"), on_availability=on_availability
        )
        written = retried = None
        if meter is not None:
            written, retried = self._metrics(meter)
        self.schema = Schema(self.connection)
        self.chunks = Chunks(self.connection, self.schema, WriteRetries(self.connection, retried), written)
        self._search = Search(self.connection)

    def _metrics(self, meter: Any) -> tuple[Any, Any]:
        """The chunks-written and write-retries counters, and the weaviate-up gauge."""
        from opentelemetry.metrics import CallbackOptions, Observation

        written = meter.create_counter(
            "lorag.indexer.chunks.written", unit="{chunk}", description="Chunks Weaviate confirmed."
        )
        retried = meter.create_counter(
            "lorag.indexer.weaviate.write_retries", unit="{retry}", description="Weaviate write attempts retried."
        )

        def up(_options: CallbackOptions) -> Iterator[Observation]:
            yield Observation(1 if self.connection.up else 0)

        meter.create_observable_gauge(
            "lorag.indexer.weaviate.up", callbacks=[up], unit="1", description="1 while Weaviate answers probes."
        )
        return written, retried

    @property
    def available(self) -> bool:
        """True while Weaviate answers the probes and a client is connected."""
        return self.connection.available

    async def start(self, wait: bool = True) -> None:
        await self.connection.start(wait)

    async def close(self) -> None:
        await self.connection.close()

    # -- collections and tenants -----------------------------------------------------------------------------------

    async def create_collection(self, spec: CollectionInfo) -> CollectionInfo:
        return await self.schema.create_collection(spec)

    async def get_collection(self, name: str, *, fresh: bool = False) -> CollectionInfo:
        return await self.schema.get_collection(name, fresh=fresh)

    async def list_collections(self, after: str | None, limit: int) -> Page[CollectionInfo]:
        return await self.schema.list_collections(after, limit)

    async def delete_collection(self, name: str, allow_missing: bool) -> None:
        await self.schema.delete_collection(name, allow_missing)

    async def list_tenants(self, collection: str, after: str | None, limit: int) -> Page[Tenant]:
        return await self.schema.list_tenants(collection, after, limit)

    async def delete_tenant(self, collection: str, tenant: str, allow_missing: bool) -> None:
        await self.schema.delete_tenant(collection, tenant, allow_missing)

    # -- chunks ----------------------------------------------------------------------------------------------------

    async def upsert(
        self, info: CollectionInfo, tenant: str, chunks: list[ChunkData], delete_stale: bool
    ) -> UpsertResult:
        return await self.chunks.upsert(info, tenant, chunks, delete_stale)

    async def delete_documents(self, info: CollectionInfo, tenant: str, document_ids: list[str]) -> DeleteResult:
        return await self.chunks.delete_documents(info, tenant, document_ids)

    async def document_states(self, info: CollectionInfo, tenant: str, document_ids: list[str]) -> list[DocumentState]:
        return await self.chunks.document_states(info, tenant, document_ids)

    async def list_documents(
        self, info: CollectionInfo, tenant: str, after: str | None, limit: int
    ) -> Page[DocumentState]:
        return await self.chunks.list_documents(info, tenant, after, limit)

    async def search(self, info: CollectionInfo, tenant: str, query: SearchQuery) -> SearchResult:
        return await self._search.search(info, tenant, query)


__all__ = ["WeaviateStore"]
