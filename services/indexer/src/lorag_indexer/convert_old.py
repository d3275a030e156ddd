"""The edge of the indexer: protobuf requests → validated domain objects, domain results → protobuf responses.

Everything a request can get wrong without asking Weaviate is checked here and reported as one
``InvalidArgument`` listing every bad field (``BadRequest`` field violations with proto paths such as
``chunks[3].vector``). Checks that need the collection's schema (vector length, metadata types, filter fields) take
its :class:`CollectionInfo`. Filters become ``weaviate.classes.query.Filter`` trees here too, so the store never sees
a proto.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from weaviate.classes.query import Filter

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag_core.errors import FieldViolation, InvalidArgument
from lorag_indexer.backends import (
    Bm25Settings,
    ChunkData,
    CollectionInfo,
    Distance,
    DocumentState,
    Fusion,
    Hit,
    HnswSettings,
    MetadataType,
    SearchMode,
    SearchQuery,
    Tenant,
    TenantActivity,
    TypedValue,
)

# -- limits the contract states ------------------------------------------------------------------------------------

MAX_BATCH_CHUNKS = 1000
MAX_DOCUMENT_IDS = 1000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_SEARCH_LIMIT = 1000
DEFAULT_SEARCH_LIMIT = 10
MAX_OFFSET_PLUS_LIMIT = 10000
MAX_FILTER_DEPTH = 8
MAX_VECTOR_DIMENSIONS = 65536
MAX_DOCUMENT_ID_CHARS = 1024
MAX_DESCRIPTION_CHARS = 4096
MAX_EMBEDDING_MODEL_CHARS = 512
MAX_VIOLATIONS = 50
# Scalar ints travel to Weaviate inside a protobuf Struct (a double), so only these are stored exactly.
MAX_EXACT_INT = 2**53

COLLECTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
KEYWORD_PROPERTY = re.compile(r"^(text|title)(\^(\d+(\.\d+)?))?$")

# -- Weaviate property names of the built-in fields ----------------------------------------------------------------

#: Filterable built-in fields (the FieldFilter.field names) → (Weaviate property, type).
BUILTIN_FILTER_FIELDS: dict[str, tuple[str, MetadataType]] = {
    "document_id": ("document_id", MetadataType.STRING),
    "title": ("title_exact", MetadataType.STRING),
    "source_uri": ("source_uri", MetadataType.STRING),
    "content_sha256": ("content_sha256", MetadataType.STRING),
    "chunk_index": ("chunk_index", MetadataType.INT),
    "token_count": ("token_count", MetadataType.INT),
}
METADATA_PREFIX = "meta_"


def metadata_property(key: str) -> str:
    """The Weaviate property that stores metadata ``key``."""
    return METADATA_PREFIX + key


# -- proto ↔ domain enums ------------------------------------------------------------------------------------------

_DISTANCES = {
    pb.DISTANCE_METRIC_UNSPECIFIED: Distance.COSINE,
    pb.DISTANCE_METRIC_COSINE: Distance.COSINE,
    pb.DISTANCE_METRIC_DOT: Distance.DOT,
    pb.DISTANCE_METRIC_L2_SQUARED: Distance.L2_SQUARED,
    pb.DISTANCE_METRIC_MANHATTAN: Distance.MANHATTAN,
    pb.DISTANCE_METRIC_HAMMING: Distance.HAMMING,
}
_DISTANCES_PB = {v: k for k, v in _DISTANCES.items() if k != pb.DISTANCE_METRIC_UNSPECIFIED}

_METADATA_TYPES = {
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
_METADATA_TYPES_PB = {v: k for k, v in _METADATA_TYPES.items()}

_ACTIVITY_PB = {
    TenantActivity.UNSPECIFIED: pb.TENANT_ACTIVITY_UNSPECIFIED,
    TenantActivity.ACTIVE: pb.TENANT_ACTIVITY_ACTIVE,
    TenantActivity.INACTIVE: pb.TENANT_ACTIVITY_INACTIVE,
    TenantActivity.OFFLOADED: pb.TENANT_ACTIVITY_OFFLOADED,
}

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

# MetadataValue oneof kind → the type a value of that kind has when written.
_KIND_TYPES = {
    "string_value": MetadataType.STRING,
    "int_value": MetadataType.INT,
    "double_value": MetadataType.DOUBLE,
    "bool_value": MetadataType.BOOL,
    "timestamp_value": MetadataType.TIMESTAMP,
    "string_list": MetadataType.STRING_LIST,
    "int_list": MetadataType.INT_LIST,
    "double_list": MetadataType.DOUBLE_LIST,
    "bool_list": MetadataType.BOOL_LIST,
}


# -- violations ----------------------------------------------------------------------------------------------------


class Violations:
    """Collects every bad field of a request, then raises one InvalidArgument (reason of the first problem)."""

    def __init__(self) -> None:
        self._items: list[tuple[FieldViolation, str]] = []

    def add(self, field: str, description: str, reason: str = "INVALID_ARGUMENT") -> None:
        if len(self._items) < MAX_VIOLATIONS:
            self._items.append((FieldViolation(field, description), reason))

    def __bool__(self) -> bool:
        return bool(self._items)

    def raise_if_any(self) -> None:
        if not self._items:
            return
        violations = [v for v, _ in self._items]
        first, reason = self._items[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(message=f"{first.field}: {first.description}{more}", reason=reason, violations=violations)


def _ordinal(n: int) -> str:
    return f"{n:,}"


# -- names ---------------------------------------------------------------------------------------------------------


def normalize_collection_name(name: str) -> str:
    """Weaviate's stored form: the first letter upper-cased ("docs" and "Docs" are one collection)."""
    return name[:1].upper() + name[1:]


def check_collection_name(name: str, field: str, errors: Violations) -> str:
    if not name:
        errors.add(field, "a collection name is required", "INVALID_NAME")
    elif not COLLECTION_NAME.match(name):
        errors.add(
            field,
            "must be a letter followed by up to 63 letters, digits or underscores",
            "INVALID_NAME",
        )
    return normalize_collection_name(name)


def check_tenant_name(name: str, field: str, errors: Violations) -> str:
    if not name:
        errors.add(field, "a tenant name is required", "INVALID_NAME")
    elif not TENANT_NAME.match(name):
        errors.add(field, "must be 1 to 64 letters, digits, hyphens or underscores", "INVALID_NAME")
    return name


def collection_name(name: str, field: str = "name") -> str:
    """A validated, normalised collection name from a request field."""
    errors = Violations()
    normalized = check_collection_name(name, field, errors)
    errors.raise_if_any()
    return normalized


def collection_and_tenant(collection: str, tenant: str) -> tuple[str, str]:
    errors = Violations()
    name = check_collection_name(collection, "collection", errors)
    check_tenant_name(tenant, "tenant", errors)
    errors.raise_if_any()
    return name, tenant


# -- paging --------------------------------------------------------------------------------------------------------


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0 or value > MAX_PAGE_SIZE:
        raise InvalidArgument.of(field, f"must be from 0 to {_ordinal(MAX_PAGE_SIZE)}", reason="PAGE_SIZE_OUT_OF_RANGE")
    return value or DEFAULT_PAGE_SIZE


def encode_page_token(kind: str, scope: str, after: str) -> str:
    """An opaque token continuing ``kind`` (the RPC) over ``scope`` (its parent) after the item named ``after``."""
    raw = json.dumps({"v": 1, "k": kind, "s": scope, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, kind: str, scope: str, field: str = "page_token") -> str | None:
    """The item a token continues after; None for an empty token. Refuses tokens another RPC or parent issued."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        valid = (
            isinstance(data, dict)
            and data.get("v") == 1
            and data.get("k") == kind
            and data.get("s") == scope
            and isinstance(data.get("a"), str)
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        valid = False
    if not valid:
        raise InvalidArgument.of(
            field, "is not a page token this RPC issued for this request", reason="INVALID_PAGE_TOKEN"
        )
    return str(data["a"])


# -- collections ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionDefaults:
    """The service's defaults for unset CreateCollection fields (from IndexerSettings)."""

    ef: int = -1
    ef_construction: int = 128
    max_connections: int = 32
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


def collection_spec(request: pb.CreateCollectionRequest, defaults: CollectionDefaults) -> CollectionInfo:
    """Validate a CreateCollectionRequest and fill in defaults."""
    errors = Violations()
    if not request.HasField("collection"):
        errors.add("collection", "the collection to create is required")
        errors.raise_if_any()
    c = request.collection
    name = check_collection_name(c.name, "collection.name", errors)
    if c.vector_dimensions < 1 or c.vector_dimensions > MAX_VECTOR_DIMENSIONS:
        errors.add(
            "collection.vector_dimensions",
            f"must be from 1 to {_ordinal(MAX_VECTOR_DIMENSIONS)}",
            "INVALID_DIMENSIONS",
        )
    h = c.hnsw
    if h.distance_metric not in _DISTANCES:
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
        errors.add("collection.description", f"must be at most {_ordinal(MAX_DESCRIPTION_CHARS)} characters")
    if len(c.embedding_model) > MAX_EMBEDDING_MODEL_CHARS:
        errors.add("collection.embedding_model", f"must be at most {MAX_EMBEDDING_MODEL_CHARS} characters")
    fields: dict[str, MetadataType] = {}
    for i, f in enumerate(c.metadata_fields):
        path = f"collection.metadata_fields[{i}]"
        if not METADATA_KEY.match(f.name):
            errors.add(
                f"{path}.name",
                "a metadata key is 1 to 63 characters: a letter or underscore, then letters, digits or underscores",
                "INVALID_METADATA_KEY",
            )
        elif f.name in fields:
            errors.add(f"{path}.name", f"metadata key {f.name!r} is declared twice", "INVALID_METADATA_KEY")
        if f.type not in _METADATA_TYPES:
            errors.add(f"{path}.type", "a metadata type is required", "INVALID_METADATA_TYPE")
        elif METADATA_KEY.match(f.name):
            fields[f.name] = _METADATA_TYPES[f.type]
    errors.raise_if_any()
    return CollectionInfo(
        name=name,
        dimensions=c.vector_dimensions,
        hnsw=HnswSettings(_DISTANCES[h.distance_metric], ef, ef_construction, max_connections),
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


# -- metadata values -----------------------------------------------------------------------------------------------


def _timestamp_to_datetime(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=timezone.utc)


def metadata_from_pb(value: common_pb2.MetadataValue, field: str, errors: Violations) -> TypedValue | None:
    """A typed Python value from a MetadataValue written to a chunk; None (and a violation) when it is unusable."""
    kind = value.WhichOneof("kind")
    if kind is None:
        errors.add(field, "a metadata value must have exactly one kind set", "INVALID_METADATA_VALUE")
        return None
    mtype = _KIND_TYPES[kind]
    if kind == "string_value":
        return TypedValue(mtype, value.string_value)
    if kind == "int_value":
        if abs(value.int_value) > MAX_EXACT_INT:
            errors.add(
                field, "an int metadata value must be within ±2^53 to be stored exactly", "INVALID_METADATA_VALUE"
            )
            return None
        return TypedValue(mtype, value.int_value)
    if kind == "double_value":
        if not math.isfinite(value.double_value):
            errors.add(field, "NaN and infinities are refused", "INVALID_METADATA_VALUE")
            return None
        return TypedValue(mtype, value.double_value)
    if kind == "bool_value":
        return TypedValue(mtype, value.bool_value)
    if kind == "timestamp_value":
        try:
            return TypedValue(mtype, _timestamp_to_datetime(value.timestamp_value))
        except (ValueError, OverflowError):
            errors.add(field, "the timestamp is out of range", "INVALID_METADATA_VALUE")
            return None
    values = list(getattr(value, kind).values)
    if kind == "double_list" and not all(math.isfinite(v) for v in values):
        errors.add(field, "NaN and infinities are refused", "INVALID_METADATA_VALUE")
        return None
    return TypedValue(mtype, values)


def metadata_to_pb(value: TypedValue) -> common_pb2.MetadataValue:
    t, v = value.type, value.value
    if t is MetadataType.STRING:
        return common_pb2.MetadataValue(string_value=v)
    if t is MetadataType.INT:
        return common_pb2.MetadataValue(int_value=int(v))
    if t is MetadataType.DOUBLE:
        return common_pb2.MetadataValue(double_value=float(v))
    if t is MetadataType.BOOL:
        return common_pb2.MetadataValue(bool_value=bool(v))
    if t is MetadataType.TIMESTAMP:
        ts = Timestamp()
        ts.FromDatetime(v if v.tzinfo else v.replace(tzinfo=timezone.utc))
        return common_pb2.MetadataValue(timestamp_value=ts)
    if t is MetadataType.STRING_LIST:
        return common_pb2.MetadataValue(string_list=common_pb2.StringList(values=list(v)))
    if t is MetadataType.INT_LIST:
        return common_pb2.MetadataValue(int_list=common_pb2.IntList(values=[int(x) for x in v]))
    if t is MetadataType.DOUBLE_LIST:
        return common_pb2.MetadataValue(double_list=common_pb2.DoubleList(values=[float(x) for x in v]))
    return common_pb2.MetadataValue(bool_list=common_pb2.BoolList(values=[bool(x) for x in v]))


# -- chunks --------------------------------------------------------------------------------------------------------


def chunks_from_pb(request: pb.UpsertChunksRequest, collection: str, tenant: str) -> list[ChunkData]:
    """Validate an UpsertChunksRequest's chunks on their own (no schema needed) and convert them."""
    errors = Violations()
    n = len(request.chunks)
    if n == 0:
        errors.add("chunks", "at least one chunk is required", "EMPTY_BATCH")
    elif n > MAX_BATCH_CHUNKS:
        errors.add(
            "chunks", f"at most {_ordinal(MAX_BATCH_CHUNKS)} chunks per call, got {_ordinal(n)}", "BATCH_TOO_LARGE"
        )
    errors.raise_if_any()

    seen_ids: dict[str, int] = {}
    key_types: dict[str, tuple[MetadataType, str]] = {}
    doc_hashes: dict[str, tuple[str, int]] = {}
    chunks: list[ChunkData] = []
    for i, record in enumerate(request.chunks):
        path = f"chunks[{i}]"
        c = record.chunk
        chunk_id = c.chunk_id
        try:
            chunk_id = str(uuid.UUID(c.chunk_id))
        except ValueError:
            errors.add(f"{path}.chunk.chunk_id", f"{c.chunk_id!r} is not a UUID", "INVALID_CHUNK_ID")
        else:
            if chunk_id in seen_ids:
                errors.add(
                    f"{path}.chunk.chunk_id", f"repeats the id of chunks[{seen_ids[chunk_id]}]", "DUPLICATE_CHUNK_ID"
                )
            seen_ids.setdefault(chunk_id, i)
        if c.tenant and c.tenant != tenant:
            errors.add(
                f"{path}.chunk.tenant", f"names tenant {c.tenant!r}, not the request's {tenant!r}", "WRONG_TENANT"
            )
        if c.collection and normalize_collection_name(c.collection) != collection:
            errors.add(
                f"{path}.chunk.collection",
                f"names collection {c.collection!r}, not the request's {collection!r}",
                "WRONG_COLLECTION",
            )
        if not c.document_id:
            errors.add(f"{path}.chunk.document_id", "a document id is required", "INVALID_CHUNK")
        elif len(c.document_id) > MAX_DOCUMENT_ID_CHARS:
            errors.add(
                f"{path}.chunk.document_id", f"must be at most {MAX_DOCUMENT_ID_CHARS} characters", "INVALID_CHUNK"
            )
        for name in ("char_start", "token_count", "chunk_index"):
            if getattr(c, name) < 0:
                errors.add(f"{path}.chunk.{name}", "must not be negative", "INVALID_CHUNK")
        if c.char_end < c.char_start:
            errors.add(f"{path}.chunk.char_end", "must not be below char_start", "INVALID_CHUNK")
        if c.content_sha256 and not SHA256_HEX.match(c.content_sha256):
            errors.add(f"{path}.chunk.content_sha256", "must be 64 lower-case hex digits (or empty)", "INVALID_CHUNK")
        if request.delete_stale_chunks and c.document_id:
            first = doc_hashes.setdefault(c.document_id, (c.content_sha256, i))
            if first[0] != c.content_sha256:
                errors.add(
                    f"{path}.chunk.content_sha256",
                    f"differs from chunks[{first[1]}] of the same document; with delete_stale_chunks every chunk of "
                    "a document must carry one content hash",
                    "INCONSISTENT_DOCUMENT_HASH",
                )
        vector = list(record.vector)
        if not vector:
            errors.add(f"{path}.vector", "a vector is required", "DIMENSION_MISMATCH")
        elif not all(math.isfinite(x) for x in vector):
            errors.add(f"{path}.vector", "NaN and infinities are refused", "INVALID_VECTOR")
        metadata: dict[str, TypedValue] = {}
        for key in sorted(c.metadata):
            mpath = f"{path}.chunk.metadata[{key}]"
            if not METADATA_KEY.match(key):
                errors.add(
                    mpath,
                    "a metadata key is 1 to 63 characters: a letter or underscore, then letters, digits or underscores",
                    "INVALID_METADATA_KEY",
                )
                continue
            typed = metadata_from_pb(c.metadata[key], mpath, errors)
            if typed is None:
                continue
            first_type = key_types.setdefault(key, (typed.type, mpath))
            if first_type[0] is not typed.type:
                errors.add(
                    mpath,
                    f"is a {type_name(typed.type)} but {first_type[1]} is a {type_name(first_type[0])}",
                    "METADATA_TYPE_CONFLICT",
                )
                continue
            metadata[key] = typed
        chunks.append(
            ChunkData(
                chunk_id=chunk_id,
                document_id=c.document_id,
                text=c.text,
                char_start=c.char_start,
                char_end=c.char_end,
                token_count=c.token_count,
                chunk_index=c.chunk_index,
                title=c.title,
                source_uri=c.source_uri,
                content_sha256=c.content_sha256,
                metadata=metadata,
                vector=vector,
            )
        )
    errors.raise_if_any()
    return chunks


def type_name(t: MetadataType) -> str:
    return pb.MetadataType.Name(_METADATA_TYPES_PB[t]).removeprefix("METADATA_TYPE_").lower()


def check_chunks_against(info: CollectionInfo, chunks: list[ChunkData]) -> None:
    """Vector lengths and metadata types against the collection; keys it does not know yet are fine (new)."""
    errors = Violations()
    for i, chunk in enumerate(chunks):
        if chunk.vector is not None and len(chunk.vector) != info.dimensions:
            errors.add(
                f"chunks[{i}].vector",
                f"has {len(chunk.vector)} dimensions; collection {info.name} holds vectors of {info.dimensions}",
                "DIMENSION_MISMATCH",
            )
        for key, typed in chunk.metadata.items():
            known = info.metadata_fields.get(key)
            if known is not None and known is not typed.type:
                errors.add(
                    f"chunks[{i}].chunk.metadata[{key}]",
                    f"is a {type_name(typed.type)} but the collection stores {key!r} as {type_name(known)}",
                    "METADATA_TYPE_CONFLICT",
                )
    errors.raise_if_any()


def chunk_to_pb(chunk: ChunkData, tenant: str, collection: str) -> common_pb2.Chunk:
    return common_pb2.Chunk(
        chunk_id=chunk.chunk_id,
        document_id=chunk.document_id,
        tenant=tenant,
        collection=collection,
        text=chunk.text,
        char_start=chunk.char_start,
        char_end=chunk.char_end,
        token_count=chunk.token_count,
        chunk_index=chunk.chunk_index,
        title=chunk.title,
        source_uri=chunk.source_uri,
        content_sha256=chunk.content_sha256,
        metadata={key: metadata_to_pb(v) for key, v in chunk.metadata.items()},
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


def document_state_to_pb(state: DocumentState) -> pb.DocumentState:
    return pb.DocumentState(
        document_id=state.document_id,
        exists=state.exists,
        content_sha256=state.content_sha256,
        chunk_count=state.chunk_count,
        title=state.title,
        source_uri=state.source_uri,
    )


def document_ids(ids: Iterable[str], field: str = "document_ids") -> list[str]:
    """1 to 1,000 non-empty document ids, in request order."""
    ids = list(ids)
    errors = Violations()
    if not ids:
        errors.add(field, "at least one document id is required", "EMPTY_INPUT")
    elif len(ids) > MAX_DOCUMENT_IDS:
        errors.add(
            field, f"at most {_ordinal(MAX_DOCUMENT_IDS)} ids per call, got {_ordinal(len(ids))}", "TOO_MANY_IDS"
        )
    else:
        for i, doc in enumerate(ids):
            if not doc:
                errors.add(f"{field}[{i}]", "a document id must not be empty", "INVALID_DOCUMENT_ID")
            elif len(doc) > MAX_DOCUMENT_ID_CHARS:
                errors.add(
                    f"{field}[{i}]", f"must be at most {MAX_DOCUMENT_ID_CHARS} characters", "INVALID_DOCUMENT_ID"
                )
    errors.raise_if_any()
    return ids


# -- filters -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    prop: str
    type: MetadataType


def filter_fields(info: CollectionInfo) -> dict[str, FieldSpec]:
    """Every FieldFilter.field name the collection accepts, with its Weaviate property and type."""
    fields = {name: FieldSpec(prop, t) for name, (prop, t) in BUILTIN_FILTER_FIELDS.items()}
    for key, t in info.metadata_fields.items():
        fields[f"metadata.{key}"] = FieldSpec(metadata_property(key), t)
    return fields


_OP = common_pb2.FilterOperator
_RANGE_OPS = {
    _OP.FILTER_OPERATOR_GREATER_THAN: "greater_than",
    _OP.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL: "greater_or_equal",
    _OP.FILTER_OPERATOR_LESS_THAN: "less_than",
    _OP.FILTER_OPERATOR_LESS_THAN_OR_EQUAL: "less_or_equal",
}
_SCALAR_KINDS = {
    MetadataType.STRING: ("string_value",),
    MetadataType.INT: ("int_value",),
    MetadataType.DOUBLE: ("double_value", "int_value"),
    MetadataType.BOOL: ("bool_value",),
    MetadataType.TIMESTAMP: ("timestamp_value",),
}
_LIST_KINDS = {
    MetadataType.STRING: ("string_list",),
    MetadataType.INT: ("int_list",),
    MetadataType.DOUBLE: ("double_list", "int_list"),
    MetadataType.BOOL: ("bool_list",),
    MetadataType.TIMESTAMP: (),
}


def _operand(
    value: common_pb2.MetadataValue,
    element: MetadataType,
    kinds: tuple[str, ...],
    path: str,
    errors: Violations,
    describe: str,
) -> Any:
    kind = value.WhichOneof("kind")
    if kind not in kinds:
        got = kind or "no value"
        errors.add(path, f"{describe}; got {got}", "FILTER_TYPE_MISMATCH")
        return None
    if kind == "timestamp_value":
        try:
            return _timestamp_to_datetime(value.timestamp_value)
        except (ValueError, OverflowError):
            errors.add(path, "the timestamp is out of range", "INVALID_FILTER")
            return None
    raw = getattr(value, kind)
    if kind.endswith("_list"):
        values = list(raw.values)
        if not values:
            errors.add(path, "the list operand must hold at least one element", "INVALID_FILTER")
            return None
        if element is MetadataType.DOUBLE:
            values = [float(v) for v in values]
            if not all(math.isfinite(v) for v in values):
                errors.add(path, "NaN and infinities are refused", "INVALID_FILTER")
                return None
        return values
    if element is MetadataType.DOUBLE:
        raw = float(raw)
        if not math.isfinite(raw):
            errors.add(path, "NaN and infinities are refused", "INVALID_FILTER")
            return None
    return raw


def _field_filter(f: common_pb2.FieldFilter, fields: Mapping[str, FieldSpec], path: str, errors: Violations) -> Any:
    spec = fields.get(f.field)
    if spec is None:
        if f.field.startswith("metadata."):
            message = f"unknown field {f.field!r}: no chunk of this collection has metadata key {f.field[9:]!r}"
        else:
            builtins = ", ".join(BUILTIN_FILTER_FIELDS)
            message = f"unknown field {f.field!r}; use one of {builtins}, or metadata.<key>"
        errors.add(f"{path}.field", message, "UNKNOWN_FILTER_FIELD")
        return None
    element = spec.type.element
    type_label = type_name(spec.type)
    op = f.operator
    prop = Filter.by_property(spec.prop)
    vpath = f"{path}.value"

    def compared() -> Any:
        """The one value of the field's own type that ==, !=, <, <=, > and >= compare with."""
        return _operand(
            f.value,
            element,
            _SCALAR_KINDS[element],
            vpath,
            errors,
            f"field {f.field!r} ({type_label}) compares with a {type_name(element)} value",
        )

    if op in (_OP.FILTER_OPERATOR_EQUAL, _OP.FILTER_OPERATOR_NOT_EQUAL):
        v = compared()
        if v is None:
            return None
        return prop.equal(v) if op == _OP.FILTER_OPERATOR_EQUAL else prop.not_equal(v)
    if op in _RANGE_OPS:
        if element is MetadataType.BOOL:
            errors.add(f"{path}.operator", f"field {f.field!r} is boolean and has no order", "INVALID_FILTER")
            return None
        v = compared()
        if v is None:
            return None
        return getattr(prop, _RANGE_OPS[op])(v)
    if op == _OP.FILTER_OPERATOR_LIKE:
        if element is not MetadataType.STRING:
            errors.add(f"{path}.operator", f"LIKE needs a string field; {f.field!r} is {type_label}", "INVALID_FILTER")
            return None
        v = _operand(f.value, element, ("string_value",), vpath, errors, "LIKE takes a string pattern")
        return None if v is None else prop.like(v)
    if op in (_OP.FILTER_OPERATOR_CONTAINS_ANY, _OP.FILTER_OPERATOR_CONTAINS_ALL):
        kinds = _LIST_KINDS[element]
        if not kinds:
            errors.add(
                f"{path}.operator", f"field {f.field!r} ({type_label}) has no list operand type", "INVALID_FILTER"
            )
            return None
        v = _operand(
            f.value,
            element,
            kinds,
            vpath,
            errors,
            f"{_OP.Name(op)} on {f.field!r} takes a list of {type_name(element)}",
        )
        if v is None:
            return None
        return prop.contains_any(v) if op == _OP.FILTER_OPERATOR_CONTAINS_ANY else prop.contains_all(v)
    if op == _OP.FILTER_OPERATOR_IS_NULL:
        v = _operand(f.value, element, ("bool_value",), vpath, errors, "IS_NULL takes a bool (true: absent)")
        return None if v is None else prop.is_none(v)
    errors.add(f"{path}.operator", "a filter operator is required", "INVALID_FILTER")
    return None


_MATCH_ALL = object()


def _filter(node: common_pb2.Filter, fields: Mapping[str, FieldSpec], path: str, depth: int, errors: Violations) -> Any:
    if depth > MAX_FILTER_DEPTH:
        errors.add(path, f"the filter tree is deeper than {MAX_FILTER_DEPTH} levels", "FILTER_TOO_DEEP")
        return None
    kind = node.WhichOneof("kind")
    if kind is None:
        return _MATCH_ALL
    if kind == "field":
        return _field_filter(node.field, fields, f"{path}.field", errors)
    composite = node.composite
    cpath = f"{path}.composite"
    if composite.operator not in (common_pb2.LOGICAL_OPERATOR_AND, common_pb2.LOGICAL_OPERATOR_OR):
        errors.add(f"{cpath}.operator", "a logical operator (AND or OR) is required", "INVALID_FILTER")
    if not composite.filters:
        errors.add(f"{cpath}.filters", "a composite filter needs at least one operand", "INVALID_FILTER")
        return None
    operands = [
        _filter(child, fields, f"{cpath}.filters[{i}]", depth + 1, errors) for i, child in enumerate(composite.filters)
    ]
    if errors:
        return None
    if composite.operator == common_pb2.LOGICAL_OPERATOR_OR:
        if any(o is _MATCH_ALL for o in operands):
            return _MATCH_ALL
        return operands[0] if len(operands) == 1 else Filter.any_of(operands)
    operands = [o for o in operands if o is not _MATCH_ALL]
    if not operands:
        return _MATCH_ALL
    return operands[0] if len(operands) == 1 else Filter.all_of(operands)


def filter_from_pb(node: common_pb2.Filter, info: CollectionInfo, path: str = "filter") -> Any:
    """A Weaviate filter for ``node``, or None when it matches every chunk; InvalidArgument names each bad node."""
    errors = Violations()
    result = _filter(node, filter_fields(info), path, 1, errors)
    errors.raise_if_any()
    return None if result is _MATCH_ALL else result


# -- search --------------------------------------------------------------------------------------------------------


def search_query(request: pb.SearchRequest, info: CollectionInfo) -> SearchQuery:
    """Validate a SearchRequest against the collection and build the domain query."""
    errors = Violations()
    if request.mode not in _MODES:
        errors.add("mode", f"unknown search mode {request.mode}", "INVALID_ARGUMENT")
        errors.raise_if_any()
    mode = _MODES[request.mode]
    if request.fusion not in _FUSIONS:
        errors.add("fusion", f"unknown fusion type {request.fusion}")
    limit = request.limit or DEFAULT_SEARCH_LIMIT
    if request.limit < 0 or request.limit > MAX_SEARCH_LIMIT:
        errors.add(
            "limit",
            f"must be from 1 to {_ordinal(MAX_SEARCH_LIMIT)} (0 means {DEFAULT_SEARCH_LIMIT})",
            "LIMIT_OUT_OF_RANGE",
        )
    if request.offset < 0:
        errors.add("offset", "must not be negative", "LIMIT_OUT_OF_RANGE")
    elif request.offset + limit > MAX_OFFSET_PLUS_LIMIT:
        errors.add(
            "offset", f"offset plus limit may be at most {_ordinal(MAX_OFFSET_PLUS_LIMIT)}", "LIMIT_OUT_OF_RANGE"
        )
    text = request.query_text
    if mode in (SearchMode.KEYWORD, SearchMode.HYBRID) and not text.strip():
        errors.add("query_text", f"a query text is required in {mode.value} mode", "MISSING_QUERY")
    vector: list[float] | None = None
    if mode in (SearchMode.VECTOR, SearchMode.HYBRID):
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
    keyword_properties = ["text", "title"]
    if request.keyword_properties:
        keyword_properties = []
        for i, p in enumerate(request.keyword_properties):
            match = KEYWORD_PROPERTY.match(p)
            if not match or (match.group(3) is not None and float(match.group(3)) <= 0):
                errors.add(
                    f"keyword_properties[{i}]",
                    'must be "text" or "title", optionally boosted with a positive "^<weight>" (e.g. "title^2")',
                    "INVALID_ARGUMENT",
                )
            keyword_properties.append(p)
    metadata_keys: list[str] | None = None
    if request.metadata_keys:
        metadata_keys = []
        for i, key in enumerate(request.metadata_keys):
            if not METADATA_KEY.match(key):
                errors.add(f"metadata_keys[{i}]", "is not a valid metadata key", "INVALID_METADATA_KEY")
            elif key in info.metadata_fields and key not in metadata_keys:
                metadata_keys.append(key)  # keys no chunk has are simply absent from every hit
    flt = None
    if request.HasField("filter"):
        try:
            flt = filter_from_pb(request.filter, info)
        except InvalidArgument as exc:
            for v in exc.violations:
                errors.add(v.field, v.description, exc.reason)
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


def timing(total_ns: int, weaviate_ns: int) -> common_pb2.Timing:
    """Timing for indexer responses: inference_ns is the time spent in Weaviate."""
    return common_pb2.Timing(queue_ns=0, inference_ns=weaviate_ns, total_ns=max(total_ns, weaviate_ns))
