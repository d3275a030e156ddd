"""Client for the indexer service: collections, tenants, chunk writes, document states and search.

    from lorag_client.indexer import IndexerClient, chunk_record, field_filter, all_of

    async with IndexerClient() as indexer:              # 127.0.0.1:50053 unless LORAG_INDEXER_ADDRESS says otherwise
        await indexer.create_collection("docs", dimensions=384, embedding_model="all-MiniLM-L6-v2")
        await indexer.upsert_chunks("docs", "acme", [chunk_record(chunk_id, "doc-1", "text…", vector, chunk_index=0)])
        hits = (await indexer.search("docs", "acme", text="question", vector=query_vector,
                                     filter=field_filter("metadata.year", ">=", 2020), limit=5)).hits

Every RPC is safe to retry on UNAVAILABLE (writes are keyed by deterministic chunk ids), so the channel retries it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag.indexer.v1 import indexer_service_pb2_grpc as pb_grpc
from lorag_client.base import ServiceClient

Distance = Literal["cosine", "dot", "l2-squared", "manhattan", "hamming"]
Mode = Literal["vector", "keyword", "hybrid"]
Fusion = Literal["ranked", "relative_score"]

_DISTANCES = {
    "cosine": pb.DISTANCE_METRIC_COSINE,
    "dot": pb.DISTANCE_METRIC_DOT,
    "l2-squared": pb.DISTANCE_METRIC_L2_SQUARED,
    "manhattan": pb.DISTANCE_METRIC_MANHATTAN,
    "hamming": pb.DISTANCE_METRIC_HAMMING,
}
_MODES = {
    "vector": common_pb2.SEARCH_MODE_VECTOR,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}
_FUSIONS = {"ranked": common_pb2.FUSION_TYPE_RANKED, "relative_score": common_pb2.FUSION_TYPE_RELATIVE_SCORE}
_METADATA_TYPES = {
    "string": pb.METADATA_TYPE_STRING,
    "int": pb.METADATA_TYPE_INT,
    "double": pb.METADATA_TYPE_DOUBLE,
    "bool": pb.METADATA_TYPE_BOOL,
    "timestamp": pb.METADATA_TYPE_TIMESTAMP,
    "string_list": pb.METADATA_TYPE_STRING_LIST,
    "int_list": pb.METADATA_TYPE_INT_LIST,
    "double_list": pb.METADATA_TYPE_DOUBLE_LIST,
    "bool_list": pb.METADATA_TYPE_BOOL_LIST,
}
_OPERATORS = {
    "==": common_pb2.FILTER_OPERATOR_EQUAL,
    "eq": common_pb2.FILTER_OPERATOR_EQUAL,
    "!=": common_pb2.FILTER_OPERATOR_NOT_EQUAL,
    "ne": common_pb2.FILTER_OPERATOR_NOT_EQUAL,
    ">": common_pb2.FILTER_OPERATOR_GREATER_THAN,
    "gt": common_pb2.FILTER_OPERATOR_GREATER_THAN,
    ">=": common_pb2.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL,
    "gte": common_pb2.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL,
    "<": common_pb2.FILTER_OPERATOR_LESS_THAN,
    "lt": common_pb2.FILTER_OPERATOR_LESS_THAN,
    "<=": common_pb2.FILTER_OPERATOR_LESS_THAN_OR_EQUAL,
    "lte": common_pb2.FILTER_OPERATOR_LESS_THAN_OR_EQUAL,
    "like": common_pb2.FILTER_OPERATOR_LIKE,
    "contains_any": common_pb2.FILTER_OPERATOR_CONTAINS_ANY,
    "contains_all": common_pb2.FILTER_OPERATOR_CONTAINS_ALL,
    "is_null": common_pb2.FILTER_OPERATOR_IS_NULL,
}


# -- building messages ---------------------------------------------------------------------------------------------


def metadata_value(value: Any) -> common_pb2.MetadataValue:
    """A typed MetadataValue from a Python value: str, int, float, bool, datetime, or a non-empty list of one of the
    first four (pass a MetadataValue through unchanged). An empty list has no type: build its MetadataValue yourself.
    """
    if isinstance(value, common_pb2.MetadataValue):
        return value
    if isinstance(value, bool):
        return common_pb2.MetadataValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.MetadataValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.MetadataValue(double_value=value)
    if isinstance(value, str):
        return common_pb2.MetadataValue(string_value=value)
    if isinstance(value, datetime):
        ts = Timestamp()
        ts.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
        return common_pb2.MetadataValue(timestamp_value=ts)
    if isinstance(value, (list, tuple)) and value:
        items = list(value)
        if all(isinstance(v, bool) for v in items):
            return common_pb2.MetadataValue(bool_list=common_pb2.BoolList(values=items))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return common_pb2.MetadataValue(int_list=common_pb2.IntList(values=items))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            return common_pb2.MetadataValue(double_list=common_pb2.DoubleList(values=[float(v) for v in items]))
        if all(isinstance(v, str) for v in items):
            return common_pb2.MetadataValue(string_list=common_pb2.StringList(values=items))
    raise TypeError(f"no MetadataValue kind for {value!r}")


def python_value(value: common_pb2.MetadataValue) -> Any:
    """The Python value of a MetadataValue (timestamps as aware UTC datetimes, lists as lists)."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=UTC)
    if kind.endswith("_list"):
        return list(getattr(value, kind).values)
    return getattr(value, kind)


def chunk_record(
    chunk_id: str,
    document_id: str,
    text: str,
    vector: Sequence[float],
    *,
    chunk_index: int = 0,
    char_start: int = 0,
    char_end: int | None = None,
    token_count: int = 0,
    title: str = "",
    source_uri: str = "",
    content_sha256: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> pb.ChunkRecord:
    """A ChunkRecord for UpsertChunks; ``char_end`` defaults to ``char_start + len(text)``."""
    chunk = common_pb2.Chunk(
        chunk_id=chunk_id,
        document_id=document_id,
        text=text,
        chunk_index=chunk_index,
        char_start=char_start,
        char_end=char_start + len(text) if char_end is None else char_end,
        token_count=token_count,
        title=title,
        source_uri=source_uri,
        content_sha256=content_sha256,
        metadata={key: metadata_value(v) for key, v in (metadata or {}).items()},
    )
    return pb.ChunkRecord(chunk=chunk, vector=list(vector))


def field_filter(field: str, operator: str, value: Any) -> common_pb2.Filter:
    """One condition: ``field`` is a built-in field or ``metadata.<key>``; ``operator`` one of ==, !=, >, >=, <, <=,
    like, contains_any, contains_all, is_null (or eq, ne, gt, gte, lt, lte)."""
    try:
        op = _OPERATORS[operator.lower()]
    except KeyError:
        raise ValueError(f"unknown filter operator {operator!r}; use one of {', '.join(_OPERATORS)}") from None
    return common_pb2.Filter(field=common_pb2.FieldFilter(field=field, operator=op, value=metadata_value(value)))


def all_of(*filters: common_pb2.Filter) -> common_pb2.Filter:
    """Every operand must match."""
    return common_pb2.Filter(
        composite=common_pb2.CompositeFilter(operator=common_pb2.LOGICAL_OPERATOR_AND, filters=list(filters))
    )


def any_of(*filters: common_pb2.Filter) -> common_pb2.Filter:
    """At least one operand must match."""
    return common_pb2.Filter(
        composite=common_pb2.CompositeFilter(operator=common_pb2.LOGICAL_OPERATOR_OR, filters=list(filters))
    )


# -- the client ----------------------------------------------------------------------------------------------------


class IndexerClient(ServiceClient):
    """Typed asyncio client of lorag.indexer.v1.IndexerService; methods return the response messages."""

    service = "indexer"
    descriptor = pb.DESCRIPTOR.services_by_name["IndexerService"]

    _stub: pb_grpc.IndexerServiceAsyncStub

    def _make_stub(self) -> pb_grpc.IndexerServiceAsyncStub:
        return pb_grpc.IndexerServiceStub(self.channel)

    # -- collections -----------------------------------------------------------------------------------------------

    async def create_collection(
        self,
        name: str,
        dimensions: int,
        *,
        distance: Distance = "cosine",
        ef: int | None = None,
        ef_construction: int | None = None,
        max_connections: int | None = None,
        bm25_k1: float | None = None,
        bm25_b: float | None = None,
        embedding_model: str = "",
        description: str = "",
        metadata_fields: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> pb.Collection:
        """Create a multi-tenant collection; ``metadata_fields`` maps keys to "string", "int", "timestamp", ...
        Returns the collection as stored (name with its first letter upper-cased, defaults filled in)."""
        hnsw = pb.HnswConfig(distance_metric=_DISTANCES[distance])
        for field, value in (("ef", ef), ("ef_construction", ef_construction), ("max_connections", max_connections)):
            if value is not None:
                setattr(hnsw, field, value)
        bm25 = pb.Bm25Config()
        if bm25_k1 is not None:
            bm25.k1 = bm25_k1
        if bm25_b is not None:
            bm25.b = bm25_b
        collection = pb.Collection(
            name=name,
            vector_dimensions=dimensions,
            hnsw=hnsw,
            bm25=bm25,
            embedding_model=embedding_model,
            description=description,
            metadata_fields=[
                pb.MetadataField(name=key, type=_METADATA_TYPES[t]) for key, t in (metadata_fields or {}).items()
            ],
        )
        response = await self._unary(
            self._stub.CreateCollection, pb.CreateCollectionRequest(collection=collection), timeout=timeout
        )
        return response.collection

    async def get_collection(self, name: str, *, timeout: float | None = None) -> pb.Collection:
        response = await self._unary(self._stub.GetCollection, pb.GetCollectionRequest(name=name), timeout=timeout)
        return response.collection

    async def list_collections(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListCollectionsResponse:
        """One page of collections, ordered by name."""
        return await self._unary(
            self._stub.ListCollections,
            pb.ListCollectionsRequest(page_size=page_size, page_token=page_token),
            timeout=timeout,
        )

    async def iter_collections(self, *, page_size: int = 0) -> AsyncIterator[pb.Collection]:
        """Every collection, fetching pages as needed."""
        token = ""
        while True:
            page = await self.list_collections(page_size=page_size, page_token=token)
            for collection in page.collections:
                yield collection
            token = page.next_page_token
            if not token:
                return

    async def delete_collection(self, name: str, *, allow_missing: bool = False, timeout: float | None = None) -> None:
        await self._unary(
            self._stub.DeleteCollection,
            pb.DeleteCollectionRequest(name=name, allow_missing=allow_missing),
            timeout=timeout,
        )

    # -- tenants ---------------------------------------------------------------------------------------------------

    async def list_tenants(
        self, collection: str, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListTenantsResponse:
        return await self._unary(
            self._stub.ListTenants,
            pb.ListTenantsRequest(collection=collection, page_size=page_size, page_token=page_token),
            timeout=timeout,
        )

    async def iter_tenants(self, collection: str, *, page_size: int = 0) -> AsyncIterator[pb.Tenant]:
        token = ""
        while True:
            page = await self.list_tenants(collection, page_size=page_size, page_token=token)
            for tenant in page.tenants:
                yield tenant
            token = page.next_page_token
            if not token:
                return

    async def delete_tenant(
        self, collection: str, tenant: str, *, allow_missing: bool = False, timeout: float | None = None
    ) -> None:
        await self._unary(
            self._stub.DeleteTenant,
            pb.DeleteTenantRequest(collection=collection, tenant=tenant, allow_missing=allow_missing),
            timeout=timeout,
        )

    # -- chunks and documents --------------------------------------------------------------------------------------

    async def upsert_chunks(
        self,
        collection: str,
        tenant: str,
        records: Iterable[pb.ChunkRecord],
        *,
        delete_stale_chunks: bool = False,
        timeout: float | None = None,
    ) -> pb.UpsertChunksResponse:
        """Write up to 1,000 chunks (see :func:`chunk_record`); acknowledged only once Weaviate stored them all."""
        request = pb.UpsertChunksRequest(
            collection=collection, tenant=tenant, chunks=list(records), delete_stale_chunks=delete_stale_chunks
        )
        return await self._unary(self._stub.UpsertChunks, request, timeout=timeout)

    async def replace_document(
        self,
        collection: str,
        tenant: str,
        records: Sequence[pb.ChunkRecord],
        *,
        batch_size: int = 1000,
        timeout: float | None = None,
    ) -> tuple[int, int]:
        """Write one document's chunks in batches, deleting its stale chunks with the last batch.

        Returns (chunks written, stale chunks deleted). The document is never missing from search meanwhile.
        """
        if not records:
            raise ValueError("a document has at least one chunk")
        written = deleted = 0
        batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
        for n, batch in enumerate(batches):
            response = await self.upsert_chunks(
                collection, tenant, batch, delete_stale_chunks=n == len(batches) - 1, timeout=timeout
            )
            written += response.upserted_count
            deleted += response.deleted_stale_count
        return written, deleted

    async def delete_documents(
        self, collection: str, tenant: str, document_ids: Sequence[str], *, timeout: float | None = None
    ) -> pb.DeleteDocumentsResponse:
        return await self._unary(
            self._stub.DeleteDocuments,
            pb.DeleteDocumentsRequest(collection=collection, tenant=tenant, document_ids=list(document_ids)),
            timeout=timeout,
        )

    async def get_document_states(
        self, collection: str, tenant: str, document_ids: Sequence[str], *, timeout: float | None = None
    ) -> list[pb.DocumentState]:
        """One state per id, in order (``exists`` false for documents the tenant does not hold)."""
        response = await self._unary(
            self._stub.BatchGetDocumentStates,
            pb.BatchGetDocumentStatesRequest(collection=collection, tenant=tenant, document_ids=list(document_ids)),
            timeout=timeout,
        )
        return list(response.states)

    async def list_documents(
        self, collection: str, tenant: str, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListDocumentsResponse:
        return await self._unary(
            self._stub.ListDocuments,
            pb.ListDocumentsRequest(collection=collection, tenant=tenant, page_size=page_size, page_token=page_token),
            timeout=timeout,
        )

    async def iter_documents(
        self, collection: str, tenant: str, *, page_size: int = 0
    ) -> AsyncIterator[pb.DocumentState]:
        token = ""
        while True:
            page = await self.list_documents(collection, tenant, page_size=page_size, page_token=token)
            for document in page.documents:
                yield document
            token = page.next_page_token
            if not token:
                return

    # -- search ----------------------------------------------------------------------------------------------------

    async def search(
        self,
        collection: str,
        tenant: str,
        *,
        text: str = "",
        vector: Sequence[float] | None = None,
        mode: Mode | None = None,
        alpha: float | None = None,
        fusion: Fusion | None = None,
        filter: common_pb2.Filter | None = None,  # noqa: A002 - the contract's name
        limit: int = 0,
        offset: int = 0,
        keyword_properties: Sequence[str] = (),
        max_vector_distance: float | None = None,
        metadata_keys: Sequence[str] = (),
        include_vectors: bool = False,
        include_score_explanation: bool = False,
        timeout: float | None = None,
    ) -> pb.SearchResponse:
        """Search one tenant. Without ``mode``: hybrid when both text and vector are given, else the one given."""
        if mode is None:
            mode = "hybrid" if text and vector else ("vector" if vector else "keyword")
        request = pb.SearchRequest(
            collection=collection,
            tenant=tenant,
            mode=_MODES[mode],
            query_text=text,
            query_vector=list(vector or []),
            fusion=_FUSIONS[fusion] if fusion else common_pb2.FUSION_TYPE_UNSPECIFIED,
            limit=limit,
            offset=offset,
            keyword_properties=list(keyword_properties),
            metadata_keys=list(metadata_keys),
            include_vectors=include_vectors,
            include_score_explanation=include_score_explanation,
        )
        if alpha is not None:
            request.alpha = alpha
        if filter is not None:
            request.filter.CopyFrom(filter)
        if max_vector_distance is not None:
            if not math.isfinite(max_vector_distance):
                raise ValueError("max_vector_distance must be finite")
            request.max_vector_distance = max_vector_distance
        return await self.search_request(request, timeout=timeout)

    async def search_request(self, request: pb.SearchRequest, *, timeout: float | None = None) -> pb.SearchResponse:
        """Search with a ``SearchRequest`` built by the caller (for callers that hold one already)."""
        return await self._unary(self._stub.Search, request, timeout=timeout)


__all__ = [
    "IndexerClient",
    "all_of",
    "any_of",
    "chunk_record",
    "field_filter",
    "metadata_value",
    "python_value",
]
