"""SearchRequest → a domain ``SearchQuery`` checked against the collection; hits and timing → messages."""

from __future__ import annotations

import math
import re

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag_core.errors import InvalidArgument
from lorag_indexer.convert.chunks import chunk_to_pb
from lorag_indexer.convert.filters import filter_from_pb
from lorag_indexer.convert.names import check_metadata_key
from lorag_indexer.domain import CollectionInfo, Filter, Fusion, Hit, SearchMode, SearchQuery, Violations

MAX_SEARCH_LIMIT = 1000
DEFAULT_SEARCH_LIMIT = 10
MAX_OFFSET_PLUS_LIMIT = 10000

KEYWORD_PROPERTY = re.compile(r"(text|title)(\^(\d+(\.\d+)?))?")

_MODES = {
    common_pb2.SEARCH_MODE_UNSPECIFIED: SearchMode.HYBRID,
    common_pb2.SEARCH_MODE_HYBRID: SearchMode.HYBRID,
    common_pb2.SEARCH_MODE_VECTOR: SearchMode.VECTOR,
    common_pb2.SEARCH_MODE_KEYWORD: SearchMode.KEYWORD,
}
_FUSIONS = {
    common_pb2.FUSION_TYPE_UNSPECIFIED: Fusion.RELATIVE_SCORE,
    common_pb2.FUSION_TYPE_RELATIVE_SCORE: Fusion.RELATIVE_SCORE,
    common_pb2.FUSION_TYPE_RANKED: Fusion.RANKED,
}


def _paging(request: pb.SearchRequest, errors: Violations) -> int:
    """The limit to use (0 means the default), after checking limit and offset."""
    limit = request.limit or DEFAULT_SEARCH_LIMIT
    if request.limit < 0 or request.limit > MAX_SEARCH_LIMIT:
        errors.add(
            "limit",
            f"must be from 1 to {MAX_SEARCH_LIMIT:,} (0 means {DEFAULT_SEARCH_LIMIT})",
            "LIMIT_OUT_OF_RANGE",
        )
    if request.offset < 0:
        errors.add("offset", "must not be negative", "LIMIT_OUT_OF_RANGE")
    elif request.offset + limit > MAX_OFFSET_PLUS_LIMIT:
        errors.add("offset", f"offset plus limit may be at most {MAX_OFFSET_PLUS_LIMIT:,}", "LIMIT_OUT_OF_RANGE")
    return limit


def _query_vector(
    request: pb.SearchRequest, mode: SearchMode, info: CollectionInfo, errors: Violations
) -> list[float] | None:
    if mode not in (SearchMode.VECTOR, SearchMode.HYBRID):
        return None
    vector = list(request.query_vector)
    if not vector:
        errors.add("query_vector", f"a query vector is required in {mode.value} mode", "MISSING_QUERY")
    elif len(vector) != info.dimensions:
        errors.add(
            "query_vector",
            f"has {len(vector)} dimensions; collection {info.name} holds vectors of {info.dimensions}",
            "DIMENSION_MISMATCH",
        )
    elif not all(math.isfinite(x) for x in vector):
        errors.add("query_vector", "NaN and infinities are refused", "INVALID_VECTOR")
    return vector


def _keyword_properties(request: pb.SearchRequest, errors: Violations) -> list[str]:
    if not request.keyword_properties:
        return ["text", "title"]
    for i, p in enumerate(request.keyword_properties):
        match = KEYWORD_PROPERTY.fullmatch(p)
        if not match or (match.group(3) is not None and float(match.group(3)) <= 0):
            errors.add(
                f"keyword_properties[{i}]",
                'must be "text" or "title", optionally boosted with a positive "^<weight>" (e.g. "title^2")',
                "INVALID_ARGUMENT",
            )
    return list(request.keyword_properties)


def _metadata_keys(request: pb.SearchRequest, info: CollectionInfo, errors: Violations) -> list[str] | None:
    if not request.metadata_keys:
        return None
    keys: list[str] = []
    for i, key in enumerate(request.metadata_keys):
        if check_metadata_key(key, f"metadata_keys[{i}]", errors) and key in info.metadata_fields and key not in keys:
            keys.append(key)  # keys no chunk has are simply absent from every hit
    return keys


def _filter(request: pb.SearchRequest, info: CollectionInfo, errors: Violations) -> Filter | None:
    if not request.HasField("filter"):
        return None
    try:
        return filter_from_pb(request.filter, info)
    except InvalidArgument as exc:
        for v in exc.violations:
            errors.add(v.field, v.description, exc.reason)
        return None


def search_query(request: pb.SearchRequest, info: CollectionInfo) -> SearchQuery:
    """Validate a SearchRequest against the collection and build the domain query."""
    errors = Violations()
    if request.mode not in _MODES:
        errors.add("mode", f"unknown search mode {request.mode}", "INVALID_ARGUMENT")
        errors.raise_if_any()
    mode = _MODES[request.mode]
    if request.fusion not in _FUSIONS:
        errors.add("fusion", f"unknown fusion type {request.fusion}")
    limit = _paging(request, errors)
    text = request.query_text
    if mode in (SearchMode.KEYWORD, SearchMode.HYBRID) and not text.strip():
        errors.add("query_text", f"a query text is required in {mode.value} mode", "MISSING_QUERY")
    vector = _query_vector(request, mode, info, errors)
    alpha = 0.5
    if request.HasField("alpha"):
        if not (math.isfinite(request.alpha) and 0 <= request.alpha <= 1):
            errors.add("alpha", "must be from 0 to 1", "OUT_OF_RANGE")
        alpha = request.alpha
    max_distance: float | None = None
    if request.HasField("max_vector_distance"):
        if not math.isfinite(request.max_vector_distance):
            errors.add("max_vector_distance", "must be a finite number", "OUT_OF_RANGE")
        max_distance = request.max_vector_distance
    keyword_properties = _keyword_properties(request, errors)
    metadata_keys = _metadata_keys(request, info, errors)
    flt = _filter(request, info, errors)
    errors.raise_if_any()
    return SearchQuery(
        mode=mode,
        limit=limit,
        offset=request.offset,
        text=text,
        vector=vector,
        alpha=alpha,
        fusion=_FUSIONS[request.fusion],
        filter=flt,
        keyword_properties=keyword_properties,
        max_vector_distance=max_distance,
        metadata_keys=metadata_keys,
        include_vectors=request.include_vectors,
        include_explanation=request.include_score_explanation,
    )


def hit_to_pb(hit: Hit, tenant: str, collection: str) -> pb.SearchHit:
    message = pb.SearchHit(
        chunk=chunk_to_pb(hit.chunk, tenant, collection),
        score=hit.score,
        score_explanation=hit.explanation,
        vector=hit.chunk.vector or [],
    )
    if hit.distance is not None:
        message.distance = hit.distance
    return message


def timing(total_ns: int, weaviate_ns: int) -> common_pb2.Timing:
    """Timing for indexer responses: inference_ns is the time spent in Weaviate."""
    return common_pb2.Timing(queue_ns=0, inference_ns=weaviate_ns, total_ns=max(total_ns, weaviate_ns))


__all__ = ["hit_to_pb", "search_query", "timing"]
