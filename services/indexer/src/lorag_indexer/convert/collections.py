"""CreateCollection's settings, collections and tenants: requests → domain, domain → messages."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag_indexer.convert.names import check_collection, check_metadata_key
from lorag_indexer.domain import (
    Bm25Settings,
    CollectionInfo,
    Distance,
    HnswSettings,
    MetadataType,
    Tenant,
    TenantActivity,
    Violations,
)

MAX_VECTOR_DIMENSIONS = 65536
MAX_DESCRIPTION_CHARS = 4096
MAX_EMBEDDING_MODEL_CHARS = 512

DISTANCES = {
    pb.DISTANCE_METRIC_UNSPECIFIED: Distance.COSINE,
    pb.DISTANCE_METRIC_COSINE: Distance.COSINE,
    pb.DISTANCE_METRIC_DOT: Distance.DOT,
    pb.DISTANCE_METRIC_L2_SQUARED: Distance.L2_SQUARED,
    pb.DISTANCE_METRIC_MANHATTAN: Distance.MANHATTAN,
    pb.DISTANCE_METRIC_HAMMING: Distance.HAMMING,
}
_DISTANCES_PB = {v: k for k, v in DISTANCES.items() if k != pb.DISTANCE_METRIC_UNSPECIFIED}

METADATA_TYPES = {
    pb.METADATA_TYPE_STRING: MetadataType.STRING,
    pb.METADATA_TYPE_INT: MetadataType.INT,
    pb.METADATA_TYPE_DOUBLE: MetadataType.DOUBLE,
    pb.METADATA_TYPE_BOOL: MetadataType.BOOL,
    pb.METADATA_TYPE_TIMESTAMP: MetadataType.TIMESTAMP,
    pb.METADATA_TYPE_STRING_LIST: MetadataType.STRING_LIST,
    pb.METADATA_TYPE_INT_LIST: MetadataType.INT_LIST,
    pb.METADATA_TYPE_DOUBLE_LIST: MetadataType.DOUBLE_LIST,
    pb.METADATA_TYPE_BOOL_LIST: MetadataType.BOOL_LIST,
}
_METADATA_TYPES_PB = {v: k for k, v in METADATA_TYPES.items()}

_ACTIVITY_PB = {
    TenantActivity.UNSPECIFIED: pb.TENANT_ACTIVITY_UNSPECIFIED,
    TenantActivity.ACTIVE: pb.TENANT_ACTIVITY_ACTIVE,
    TenantActivity.INACTIVE: pb.TENANT_ACTIVITY_INACTIVE,
    TenantActivity.OFFLOADED: pb.TENANT_ACTIVITY_OFFLOADED,
}


@dataclass(frozen=True)
class CollectionDefaults:
    """The service's defaults for unset CreateCollection fields (from IndexerSettings)."""

    ef: int = -1
    ef_construction: int = 128
    max_connections: int = 32
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


def _metadata_fields(c: pb.Collection, errors: Violations) -> dict[str, MetadataType]:
    fields: dict[str, MetadataType] = {}
    for i, f in enumerate(c.metadata_fields):
        path = f"collection.metadata_fields[{i}]"
        valid_key = check_metadata_key(f.name, f"{path}.name", errors)
        if valid_key and f.name in fields:
            errors.add(f"{path}.name", f"metadata key {f.name!r} is declared twice", "INVALID_METADATA_KEY")
        if f.type not in METADATA_TYPES:
            errors.add(f"{path}.type", "a metadata type is required", "INVALID_METADATA_TYPE")
        elif valid_key:
            fields[f.name] = METADATA_TYPES[f.type]
    return fields


def collection_spec(request: pb.CreateCollectionRequest, defaults: CollectionDefaults) -> CollectionInfo:
    """Validate a CreateCollectionRequest and fill in defaults."""
    errors = Violations()
    if not request.HasField("collection"):
        errors.add("collection", "the collection to create is required")
        errors.raise_if_any()
    c = request.collection
    name = check_collection(c.name, "collection.name", errors)
    if c.vector_dimensions < 1 or c.vector_dimensions > MAX_VECTOR_DIMENSIONS:
        errors.add("collection.vector_dimensions", f"must be from 1 to {MAX_VECTOR_DIMENSIONS:,}", "INVALID_DIMENSIONS")
    h = c.hnsw
    if h.distance_metric not in DISTANCES:
        errors.add("collection.hnsw.distance_metric", f"unknown distance metric {h.distance_metric}")
    ef = h.ef if h.HasField("ef") else defaults.ef
    if h.HasField("ef") and not (h.ef == -1 or 1 <= h.ef <= 10000):
        errors.add("collection.hnsw.ef", "must be -1 (dynamic) or from 1 to 10,000", "OUT_OF_RANGE")
    ef_construction = h.ef_construction if h.HasField("ef_construction") else defaults.ef_construction
    if h.HasField("ef_construction") and not 4 <= h.ef_construction <= 4096:
        errors.add("collection.hnsw.ef_construction", "must be from 4 to 4,096", "OUT_OF_RANGE")
    max_connections = h.max_connections if h.HasField("max_connections") else defaults.max_connections
    if h.HasField("max_connections") and not 4 <= h.max_connections <= 2048:
        errors.add("collection.hnsw.max_connections", "must be from 4 to 2,048", "OUT_OF_RANGE")
    k1 = c.bm25.k1 if c.bm25.HasField("k1") else defaults.bm25_k1
    if c.bm25.HasField("k1") and not (math.isfinite(c.bm25.k1) and 0 < c.bm25.k1 <= 100):
        errors.add("collection.bm25.k1", "must be above 0 (and at most 100)", "OUT_OF_RANGE")
    b = c.bm25.b if c.bm25.HasField("b") else defaults.bm25_b
    if c.bm25.HasField("b") and not (math.isfinite(c.bm25.b) and 0 <= c.bm25.b <= 1):
        errors.add("collection.bm25.b", "must be from 0 to 1", "OUT_OF_RANGE")
    if len(c.description) > MAX_DESCRIPTION_CHARS:
        errors.add("collection.description", f"must be at most {MAX_DESCRIPTION_CHARS:,} characters")
    if len(c.embedding_model) > MAX_EMBEDDING_MODEL_CHARS:
        errors.add("collection.embedding_model", f"must be at most {MAX_EMBEDDING_MODEL_CHARS} characters")
    fields = _metadata_fields(c, errors)
    errors.raise_if_any()
    return CollectionInfo(
        name=name,
        dimensions=c.vector_dimensions,
        hnsw=HnswSettings(DISTANCES[h.distance_metric], ef, ef_construction, max_connections),
        bm25=Bm25Settings(k1=float(k1), b=float(b)),
        embedding_model=c.embedding_model,
        description=c.description,
        metadata_fields=fields,
    )


def collection_to_pb(info: CollectionInfo) -> pb.Collection:
    hnsw = pb.HnswConfig(
        distance_metric=_DISTANCES_PB[info.hnsw.distance],
        ef=info.hnsw.ef,
        ef_construction=info.hnsw.ef_construction,
        max_connections=info.hnsw.max_connections,
    )
    return pb.Collection(
        name=info.name,
        vector_dimensions=info.dimensions,
        hnsw=hnsw,
        bm25=pb.Bm25Config(k1=info.bm25.k1, b=info.bm25.b),
        embedding_model=info.embedding_model,
        description=info.description,
        metadata_fields=[
            pb.MetadataField(name=key, type=_METADATA_TYPES_PB[t]) for key, t in sorted(info.metadata_fields.items())
        ],
    )


def tenant_to_pb(tenant: Tenant) -> pb.Tenant:
    return pb.Tenant(name=tenant.name, activity=_ACTIVITY_PB[tenant.activity])


__all__ = ["CollectionDefaults", "collection_spec", "collection_to_pb", "tenant_to_pb"]
