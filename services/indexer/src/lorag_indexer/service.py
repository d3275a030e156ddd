"""The IndexerService handlers: proto in, validated domain objects, one store call, proto out.

Validation and conversion live in ``lorag_indexer.convert``, the domain objects in ``lorag_indexer.domain``, the
Weaviate work behind the store interface in ``lorag_indexer.backends.weaviate``.
"""

from __future__ import annotations

import time
from typing import Any, TypeAlias

import grpc
from opentelemetry import trace

from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag.indexer.v1 import indexer_service_pb2_grpc as pb_grpc
from lorag_indexer import convert
from lorag_indexer.backends import ChunkStore
from lorag_indexer.domain import check_chunks_against

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def _annotate(**attributes: str | int) -> None:
    span = trace.get_current_span()
    for key, value in attributes.items():
        span.set_attribute(f"lorag.indexer.{key}", value)


class IndexerServicer(pb_grpc.IndexerServiceServicer):
    """Serves lorag.indexer.v1.IndexerService from one store (in production the Weaviate store)."""

    def __init__(self, store: ChunkStore, defaults: convert.CollectionDefaults) -> None:
        self._store = store
        self._defaults = defaults

    # -- collections -----------------------------------------------------------------------------------------------

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: Context
    ) -> pb.CreateCollectionResponse:
        spec = convert.collection_spec(request, self._defaults)
        _annotate(collection=spec.name)
        info = await self._store.create_collection(spec)
        return pb.CreateCollectionResponse(collection=convert.collection_to_pb(info))

    async def GetCollection(self, request: pb.GetCollectionRequest, context: Context) -> pb.GetCollectionResponse:
        name = convert.collection_name(request.name)
        _annotate(collection=name)
        info = await self._store.get_collection(name, fresh=True)
        return pb.GetCollectionResponse(collection=convert.collection_to_pb(info))

    async def ListCollections(self, request: pb.ListCollectionsRequest, context: Context) -> pb.ListCollectionsResponse:
        size = convert.page_size(request.page_size)
        after = convert.decode_page_token(request.page_token, "collections", "")
        page = await self._store.list_collections(after, size)
        token = convert.encode_page_token("collections", "", page.items[-1].name) if page.more else ""
        return pb.ListCollectionsResponse(
            collections=[convert.collection_to_pb(info) for info in page.items], next_page_token=token
        )

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: Context
    ) -> pb.DeleteCollectionResponse:
        name = convert.collection_name(request.name)
        _annotate(collection=name)
        await self._store.delete_collection(name, request.allow_missing)
        return pb.DeleteCollectionResponse()

    # -- tenants ---------------------------------------------------------------------------------------------------

    async def ListTenants(self, request: pb.ListTenantsRequest, context: Context) -> pb.ListTenantsResponse:
        name = convert.collection_name(request.collection, "collection")
        size = convert.page_size(request.page_size)
        after = convert.decode_page_token(request.page_token, "tenants", name)
        page = await self._store.list_tenants(name, after, size)
        token = convert.encode_page_token("tenants", name, page.items[-1].name) if page.more else ""
        return pb.ListTenantsResponse(tenants=[convert.tenant_to_pb(t) for t in page.items], next_page_token=token)

    async def DeleteTenant(self, request: pb.DeleteTenantRequest, context: Context) -> pb.DeleteTenantResponse:
        name, tenant = convert.collection_and_tenant(request.collection, request.tenant)
        _annotate(collection=name, tenant=tenant)
        await self._store.delete_tenant(name, tenant, request.allow_missing)
        return pb.DeleteTenantResponse()

    # -- chunks and documents --------------------------------------------------------------------------------------

    async def UpsertChunks(self, request: pb.UpsertChunksRequest, context: Context) -> pb.UpsertChunksResponse:
        started = time.perf_counter_ns()
        name, tenant = convert.collection_and_tenant(request.collection, request.tenant)
        chunks = convert.chunks_from_pb(request, name, tenant)
        _annotate(collection=name, tenant=tenant, chunks=len(chunks))
        info = await self._store.get_collection(name)
        check_chunks_against(info, chunks)
        result = await self._store.upsert(info, tenant, chunks, request.delete_stale_chunks)
        return pb.UpsertChunksResponse(
            upserted_count=result.upserted,
            deleted_stale_count=result.deleted_stale,
            timing=convert.timing(time.perf_counter_ns() - started, result.weaviate_ns),
        )

    async def DeleteDocuments(self, request: pb.DeleteDocumentsRequest, context: Context) -> pb.DeleteDocumentsResponse:
        name, tenant = convert.collection_and_tenant(request.collection, request.tenant)
        ids = convert.document_ids(request.document_ids)
        _annotate(collection=name, tenant=tenant, documents=len(ids))
        info = await self._store.get_collection(name)
        result = await self._store.delete_documents(info, tenant, ids)
        return pb.DeleteDocumentsResponse(deleted_document_count=result.documents, deleted_chunk_count=result.chunks)

    async def BatchGetDocumentStates(
        self, request: pb.BatchGetDocumentStatesRequest, context: Context
    ) -> pb.BatchGetDocumentStatesResponse:
        name, tenant = convert.collection_and_tenant(request.collection, request.tenant)
        ids = convert.document_ids(request.document_ids)
        _annotate(collection=name, tenant=tenant, documents=len(ids))
        info = await self._store.get_collection(name)
        states = await self._store.document_states(info, tenant, ids)
        return pb.BatchGetDocumentStatesResponse(states=[convert.document_state_to_pb(s) for s in states])

    async def ListDocuments(self, request: pb.ListDocumentsRequest, context: Context) -> pb.ListDocumentsResponse:
        name, tenant = convert.collection_and_tenant(request.collection, request.tenant)
        size = convert.page_size(request.page_size)
        scope = f"{name}/{tenant}"
        after = convert.decode_page_token(request.page_token, "documents", scope)
        _annotate(collection=name, tenant=tenant)
        info = await self._store.get_collection(name)
        page = await self._store.list_documents(info, tenant, after, size)
        token = convert.encode_page_token("documents", scope, page.items[-1].document_id) if page.more else ""
        return pb.ListDocumentsResponse(
            documents=[convert.document_state_to_pb(s) for s in page.items], next_page_token=token
        )

    # -- search ----------------------------------------------------------------------------------------------------

    async def Search(self, request: pb.SearchRequest, context: Context) -> pb.SearchResponse:
        started = time.perf_counter_ns()
        name, tenant = convert.collection_and_tenant(request.collection, request.tenant)
        info = await self._store.get_collection(name)
        query = convert.search_query(request, info)
        _annotate(collection=name, tenant=tenant, mode=query.mode.value, limit=query.limit)
        result = await self._store.search(info, tenant, query)
        return pb.SearchResponse(
            hits=[convert.hit_to_pb(hit, tenant, info.name) for hit in result.hits],
            timing=convert.timing(time.perf_counter_ns() - started, result.weaviate_ns),
        )
