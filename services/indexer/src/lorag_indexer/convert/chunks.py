"""UpsertChunks' chunks, typed metadata values, document ids and document states: requests → domain → messages."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag_core.names import normalize_collection
from lorag_indexer.convert.names import check_metadata_key
from lorag_indexer.domain import ChunkData, DocumentState, MetadataType, TypedValue, Violations, type_name

MAX_BATCH_CHUNKS = 1000
MAX_DOCUMENT_IDS = 1000
MAX_DOCUMENT_ID_CHARS = 1024
# Scalar ints travel to Weaviate inside a protobuf Struct (a double), so only these are stored exactly.
MAX_EXACT_INT = 2**53

SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# MetadataValue oneof kind → the type a value of that kind has when written.
KIND_TYPES = {
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


def timestamp_to_datetime(ts: Timestamp) -> datetime:
    """A UTC datetime; ValueError or OverflowError when the timestamp is out of Python's range."""
    return ts.ToDatetime(tzinfo=UTC)


# -- metadata values -----------------------------------------------------------------------------------------------


def metadata_from_pb(value: common_pb2.MetadataValue, field: str, errors: Violations) -> TypedValue | None:
    """A typed Python value from a MetadataValue written to a chunk; None (and a violation) when it is unusable."""
    kind = value.WhichOneof("kind")
    if kind is None:
        errors.add(field, "a metadata value must have exactly one kind set", "INVALID_METADATA_VALUE")
        return None
    mtype = KIND_TYPES[kind]
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
            return TypedValue(mtype, timestamp_to_datetime(value.timestamp_value))
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
        ts.FromDatetime(v if v.tzinfo else v.replace(tzinfo=UTC))
        return common_pb2.MetadataValue(timestamp_value=ts)
    if t is MetadataType.STRING_LIST:
        return common_pb2.MetadataValue(string_list=common_pb2.StringList(values=list(v)))
    if t is MetadataType.INT_LIST:
        return common_pb2.MetadataValue(int_list=common_pb2.IntList(values=[int(x) for x in v]))
    if t is MetadataType.DOUBLE_LIST:
        return common_pb2.MetadataValue(double_list=common_pb2.DoubleList(values=[float(x) for x in v]))
    return common_pb2.MetadataValue(bool_list=common_pb2.BoolList(values=[bool(x) for x in v]))


# -- chunks --------------------------------------------------------------------------------------------------------


class _BatchChecks:
    """What one chunk is checked against across the batch: repeated ids, metadata key types, document hashes."""

    def __init__(self, delete_stale: bool) -> None:
        self.delete_stale = delete_stale
        self.ids: dict[str, int] = {}
        self.key_types: dict[str, tuple[MetadataType, str]] = {}
        self.doc_hashes: dict[str, tuple[str, int]] = {}


def _chunk_id(c: common_pb2.Chunk, path: str, i: int, batch: _BatchChecks, errors: Violations) -> str:
    try:
        chunk_id = str(uuid.UUID(c.chunk_id))
    except ValueError:
        errors.add(f"{path}.chunk.chunk_id", f"{c.chunk_id!r} is not a UUID", "INVALID_CHUNK_ID")
        return c.chunk_id
    if chunk_id in batch.ids:
        errors.add(f"{path}.chunk.chunk_id", f"repeats the id of chunks[{batch.ids[chunk_id]}]", "DUPLICATE_CHUNK_ID")
    batch.ids.setdefault(chunk_id, i)
    return chunk_id


def _check_fields(
    c: common_pb2.Chunk, path: str, i: int, collection: str, tenant: str, batch: _BatchChecks, errors: Violations
) -> None:
    if c.tenant and c.tenant != tenant:
        errors.add(f"{path}.chunk.tenant", f"names tenant {c.tenant!r}, not the request's {tenant!r}", "WRONG_TENANT")
    if c.collection and normalize_collection(c.collection) != collection:
        errors.add(
            f"{path}.chunk.collection",
            f"names collection {c.collection!r}, not the request's {collection!r}",
            "WRONG_COLLECTION",
        )
    if not c.document_id:
        errors.add(f"{path}.chunk.document_id", "a document id is required", "INVALID_CHUNK")
    elif len(c.document_id) > MAX_DOCUMENT_ID_CHARS:
        errors.add(f"{path}.chunk.document_id", f"must be at most {MAX_DOCUMENT_ID_CHARS} characters", "INVALID_CHUNK")
    for name in ("char_start", "token_count", "chunk_index"):
        if getattr(c, name) < 0:
            errors.add(f"{path}.chunk.{name}", "must not be negative", "INVALID_CHUNK")
    if c.char_end < c.char_start:
        errors.add(f"{path}.chunk.char_end", "must not be below char_start", "INVALID_CHUNK")
    if c.content_sha256 and not SHA256_HEX.fullmatch(c.content_sha256):
        errors.add(f"{path}.chunk.content_sha256", "must be 64 lower-case hex digits (or empty)", "INVALID_CHUNK")
    if batch.delete_stale and c.document_id:
        first = batch.doc_hashes.setdefault(c.document_id, (c.content_sha256, i))
        if first[0] != c.content_sha256:
            errors.add(
                f"{path}.chunk.content_sha256",
                f"differs from chunks[{first[1]}] of the same document; with delete_stale_chunks every chunk of "
                "a document must carry one content hash",
                "INCONSISTENT_DOCUMENT_HASH",
            )


def _metadata(c: common_pb2.Chunk, path: str, batch: _BatchChecks, errors: Violations) -> dict[str, TypedValue]:
    metadata: dict[str, TypedValue] = {}
    for key in sorted(c.metadata):
        mpath = f"{path}.chunk.metadata[{key}]"
        if not check_metadata_key(key, mpath, errors):
            continue
        typed = metadata_from_pb(c.metadata[key], mpath, errors)
        if typed is None:
            continue
        first_type = batch.key_types.setdefault(key, (typed.type, mpath))
        if first_type[0] is not typed.type:
            errors.add(
                mpath,
                f"is a {type_name(typed.type)} but {first_type[1]} is a {type_name(first_type[0])}",
                "METADATA_TYPE_CONFLICT",
            )
            continue
        metadata[key] = typed
    return metadata


def chunks_from_pb(request: pb.UpsertChunksRequest, collection: str, tenant: str) -> list[ChunkData]:
    """Validate an UpsertChunksRequest's chunks on their own (no schema needed) and convert them."""
    errors = Violations()
    n = len(request.chunks)
    if n == 0:
        errors.add("chunks", "at least one chunk is required", "EMPTY_BATCH")
    elif n > MAX_BATCH_CHUNKS:
        errors.add("chunks", f"at most {MAX_BATCH_CHUNKS:,} chunks per call, got {n:,}", "BATCH_TOO_LARGE")
    errors.raise_if_any()

    batch = _BatchChecks(request.delete_stale_chunks)
    chunks: list[ChunkData] = []
    for i, record in enumerate(request.chunks):
        path = f"chunks[{i}]"
        c = record.chunk
        chunk_id = _chunk_id(c, path, i, batch, errors)
        _check_fields(c, path, i, collection, tenant, batch, errors)
        vector = list(record.vector)
        if not vector:
            errors.add(f"{path}.vector", "a vector is required", "DIMENSION_MISMATCH")
        elif not all(math.isfinite(x) for x in vector):
            errors.add(f"{path}.vector", "NaN and infinities are refused", "INVALID_VECTOR")
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
                metadata=_metadata(c, path, batch, errors),
                vector=vector,
            )
        )
    errors.raise_if_any()
    return chunks


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


# -- documents -----------------------------------------------------------------------------------------------------


def document_ids(ids: Iterable[str], field: str = "document_ids") -> list[str]:
    """1 to 1,000 non-empty document ids, in request order."""
    ids = list(ids)
    errors = Violations()
    if not ids:
        errors.add(field, "at least one document id is required", "EMPTY_INPUT")
    elif len(ids) > MAX_DOCUMENT_IDS:
        errors.add(field, f"at most {MAX_DOCUMENT_IDS:,} ids per call, got {len(ids):,}", "TOO_MANY_IDS")
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


def document_state_to_pb(state: DocumentState) -> pb.DocumentState:
    return pb.DocumentState(
        document_id=state.document_id,
        exists=state.exists,
        content_sha256=state.content_sha256,
        chunk_count=state.chunk_count,
        title=state.title,
        source_uri=state.source_uri,
    )


__all__ = [
    "chunk_to_pb",
    "chunks_from_pb",
    "document_ids",
    "document_state_to_pb",
    "metadata_from_pb",
    "metadata_to_pb",
    "timestamp_to_datetime",
]
