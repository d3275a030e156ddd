"""The interface of the store behind the indexer's handlers.

Handlers convert protobuf messages into domain objects (``lorag_indexer.convert`` → ``lorag_indexer.domain``), call a
:class:`ChunkStore` and convert the results back. The one store is
:class:`lorag_indexer.backends.weaviate.WeaviateStore`; the interface speaks only domain objects, so the handlers read
as a description of the RPCs, not of Weaviate's client.
"""

from __future__ import annotations

from typing import Protocol

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


class ChunkStore(Protocol):
    """What the handlers need from a vector store; every method raises lorag_core.errors on failure."""

    async def start(self, wait: bool = True) -> None: ...
    async def close(self) -> None: ...

    async def create_collection(self, spec: CollectionInfo) -> CollectionInfo: ...
    async def get_collection(self, name: str, *, fresh: bool = False) -> CollectionInfo: ...
    async def list_collections(self, after: str | None, limit: int) -> Page[CollectionInfo]: ...
    async def delete_collection(self, name: str, allow_missing: bool) -> None: ...

    async def list_tenants(self, collection: str, after: str | None, limit: int) -> Page[Tenant]: ...
    async def delete_tenant(self, collection: str, tenant: str, allow_missing: bool) -> None: ...

    async def upsert(
        self, info: CollectionInfo, tenant: str, chunks: list[ChunkData], delete_stale: bool
    ) -> UpsertResult: ...
    async def delete_documents(self, info: CollectionInfo, tenant: str, document_ids: list[str]) -> DeleteResult: ...
    async def document_states(
        self, info: CollectionInfo, tenant: str, document_ids: list[str]
    ) -> list[DocumentState]: ...
    async def list_documents(
        self, info: CollectionInfo, tenant: str, after: str | None, limit: int
    ) -> Page[DocumentState]: ...
    async def search(self, info: CollectionInfo, tenant: str, query: SearchQuery) -> SearchResult: ...


__all__ = ["ChunkStore"]
