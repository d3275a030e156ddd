"""Chunk reads for search: vector (``near_vector``), keyword (``bm25``) and hybrid queries over one tenant.

Scores follow the contract: vector mode reports a similarity computed from Weaviate's distance under the
collection's metric; hybrid results carry no distance, so it is computed here from the stored vectors.
"""

from __future__ import annotations

import math
from typing import Any

from weaviate.classes.config import ConsistencyLevel
from weaviate.classes.query import HybridFusion, MetadataQuery
from weaviate.client import WeaviateAsyncClient

from lorag_indexer.backends.weaviate.chunks import tenant_view
from lorag_indexer.backends.weaviate.connection import WeaviateConnection, weaviate_clock
from lorag_indexer.backends.weaviate.filters import build_filter
from lorag_indexer.backends.weaviate.schema import CHUNK_PROPERTIES, VECTOR_NAME, metadata_property
from lorag_indexer.domain import (
    ChunkData,
    CollectionInfo,
    Distance,
    Fusion,
    Hit,
    SearchMode,
    SearchQuery,
    SearchResult,
    TypedValue,
)

# The weaviate-client query each search mode runs, as the client span's db.operation.name.
_QUERY_OPERATION = {SearchMode.VECTOR: "near_vector", SearchMode.KEYWORD: "bm25", SearchMode.HYBRID: "hybrid"}

_FUSION = {Fusion.RANKED: HybridFusion.RANKED, Fusion.RELATIVE_SCORE: HybridFusion.RELATIVE_SCORE}


def vector_distance(metric: Distance, a: list[float], b: list[float]) -> float:
    """The distance Weaviate would report between ``a`` and ``b`` under ``metric``."""
    if metric is Distance.COSINE:
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        if na == 0 or nb == 0:
            return 1.0
        return min(max(1.0 - sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb), 0.0), 2.0)
    if metric is Distance.DOT:
        return -sum(x * y for x, y in zip(a, b, strict=True))
    if metric is Distance.L2_SQUARED:
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    if metric is Distance.MANHATTAN:
        return sum(abs(x - y) for x, y in zip(a, b, strict=True))
    return float(sum(1 for x, y in zip(a, b, strict=True) if x != y))


def similarity(metric: Distance, distance: float) -> float:
    """Vector-mode score, higher is better: 1 - distance for cosine, the dot product for dot, -distance otherwise."""
    return 1.0 - distance if metric is Distance.COSINE else -distance


def chunk_from_object(obj: Any, info: CollectionInfo, keys: list[str] | None, with_vector: bool) -> ChunkData:
    """A chunk from a Weaviate object, with the metadata ``keys`` asked for (None: every key)."""
    p = obj.properties
    metadata: dict[str, TypedValue] = {}
    for key, mtype in info.metadata_fields.items():
        if keys is not None and key not in keys:
            continue
        value = p.get(metadata_property(key))
        if value is None:
            continue
        metadata[key] = TypedValue(mtype, value)
    vector = None
    if with_vector and obj.vector:
        raw = obj.vector.get(VECTOR_NAME) if isinstance(obj.vector, dict) else obj.vector
        vector = [float(x) for x in raw] if raw is not None else None
    return ChunkData(
        chunk_id=str(obj.uuid),
        document_id=p.get("document_id") or "",
        text=p.get("text") or "",
        char_start=int(p.get("char_start") or 0),
        char_end=int(p.get("char_end") or 0),
        token_count=int(p.get("token_count") or 0),
        chunk_index=int(p.get("chunk_index") or 0),
        title=p.get("title") or "",
        source_uri=p.get("source_uri") or "",
        content_sha256=p.get("content_sha256") or "",
        metadata=metadata,
        vector=vector,
    )


class Search:
    """Runs searches; see the module docstring."""

    def __init__(self, connection: WeaviateConnection) -> None:
        self._connection = connection
        self._consistency = ConsistencyLevel(connection.settings.consistency_level)

    async def search(self, info: CollectionInfo, tenant: str, query: SearchQuery) -> SearchResult:
        name = info.name
        attributes = {
            "collection": name,
            "tenant": tenant,
            "mode": query.mode.value,
            "limit": query.limit,
            "offset": query.offset,
            "filtered": query.filter is not None,
        }
        with self._connection.step("weaviate.search", **attributes) as span:
            keys = query.metadata_keys
            selected = info.metadata_fields if keys is None else {k: info.metadata_fields[k] for k in keys}
            properties = CHUNK_PROPERTIES + [metadata_property(k) for k in selected]
            # Hybrid results carry no distance; the stored vectors let us compute it.
            fetch_vectors = query.include_vectors or query.mode is SearchMode.HYBRID
            metadata = MetadataQuery(
                distance=query.mode is SearchMode.VECTOR,
                score=query.mode is not SearchMode.VECTOR,
                explain_score=query.include_explanation,
            )
            filters = build_filter(query.filter)

            async def run(client: WeaviateAsyncClient) -> Any:
                q = tenant_view(client, name, tenant, self._consistency).query
                common = {
                    "limit": query.limit,
                    "offset": query.offset or None,
                    "filters": filters,
                    "return_metadata": metadata,
                    "return_properties": properties,
                    "include_vector": fetch_vectors,
                }
                if query.mode is SearchMode.VECTOR:
                    return await q.near_vector(near_vector=query.vector, distance=query.max_vector_distance, **common)
                if query.mode is SearchMode.KEYWORD:
                    return await q.bm25(query=query.text, query_properties=query.keyword_properties, **common)
                return await q.hybrid(
                    query=query.text,
                    vector=query.vector,
                    alpha=query.alpha,
                    fusion_type=_FUSION[query.fusion],
                    query_properties=query.keyword_properties,
                    max_vector_distance=query.max_vector_distance,
                    **common,
                )

            with weaviate_clock() as clock:
                result = await self._connection.call(
                    "search", run, collection=name, tenant=tenant, operation=_QUERY_OPERATION[query.mode]
                )
            hits = [self._hit(obj, info, query, fetch_vectors) for obj in result.objects]
            span.set_attribute("lorag.indexer.hits", len(hits))
            return SearchResult(hits=hits, weaviate_ns=clock[0])

    @staticmethod
    def _hit(obj: Any, info: CollectionInfo, query: SearchQuery, fetched_vector: bool) -> Hit:
        metric = info.hnsw.distance
        chunk = chunk_from_object(obj, info, query.metadata_keys, fetched_vector)
        md = obj.metadata
        distance: float | None = None
        if query.mode is SearchMode.VECTOR:
            distance = float(md.distance) if md.distance is not None else None
            score = similarity(metric, distance) if distance is not None else 0.0
        else:
            score = float(md.score or 0.0)
            if query.mode is SearchMode.HYBRID and chunk.vector is not None and query.vector is not None:
                distance = vector_distance(metric, query.vector, chunk.vector)
        if not query.include_vectors:
            chunk.vector = None
        explanation = (md.explain_score or "").strip() if query.include_explanation else ""
        return Hit(chunk=chunk, score=score, distance=distance, explanation=explanation)


__all__ = ["Search", "chunk_from_object", "similarity", "vector_distance"]
