"""Document identity, validation and hashing, and ``prepare_document``: parse → chunk → ids.

Identity
    ``document_id`` is the caller's id when given (1 to 256 printable characters). Otherwise it is derived, as the
    contract states, as a UUID version 5 in :data:`DOCUMENT_NAMESPACE`: of the ``source_uri`` when set (so
    re-ingesting the same source replaces it), else of the hex SHA-256 of the parsed text (:func:`text_sha256`):

        uuid5(DOCUMENT_NAMESPACE, source_uri)          or          uuid5(DOCUMENT_NAMESPACE, sha256(text).hex)

    Chunk ids are ``uuid5(LORAG_NAMESPACE, f"{collection}/{tenant}/{document_id}/{chunk_index}")``, with the
    collection in the form Weaviate stores (first letter upper-cased: ``docs`` and ``Docs`` are one collection),
    so re-ingesting a document overwrites its chunks in place. Tenants and collections cannot hold ``/``, so the
    name is unambiguous even when a document id does.

Change detection
    ``content_sha256`` covers everything ingest writes to the index for a document apart from the chunking: the
    parsed text, the effective title (the caller's, else the content's), the source_uri and the metadata (with
    each value's type). A change to any of them is a change, and re-ingesting re-writes the chunks; changing only
    the chunking options or the embedding model is not (the request's ``force`` flag covers those). Precisely, it
    is the SHA-256 of the UTF-8 bytes of::

        json.dumps({"v": 1, "title": ..., "source_uri": ..., "metadata": {key: [type, value]}},
                   sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\\n" + text

    where type is ``string``, ``int``, ``double``, ``bool``, ``timestamp`` (value: ISO 8601 in UTC),
    ``string_list``, ``int_list``, ``double_list``, ``bool_list`` or ``list`` (an empty list). The JSON header
    holds no raw newline, so the framing is unambiguous.

Validation (``InvalidArgument`` with every violation, field paths such as ``document.collection``)
    tenant: 1 to 64 ASCII letters, digits, hyphens or underscores; collection: an ASCII letter followed by up to 63
    letters, digits or underscores (Weaviate's class-name rule); metadata keys: 1 to 63 characters, a letter or
    underscore followed by letters, digits or underscores; metadata values: ``str``, ``int`` (64-bit), finite
    ``float``, ``bool``, ``datetime`` (naive means UTC) or a list of one of ``str``/``int``/``float``/``bool``
    (ints in a list with floats are read as floats).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from lorag_core import names
from lorag_core.errors import FieldViolation, InvalidArgument

from .chunking import Chunker, TextChunk
from .parsing import DATA_FIELD, DEFAULT_MAX_BYTES, EMPTY_DOCUMENT, TEXT_FIELD, parse

#: lorag's fixed UUID namespace: ``uuid5(NAMESPACE_URL, "https://lorag.dev/")``. Never change it: chunk ids
#: derive from it.
LORAG_NAMESPACE = uuid.UUID("38511a66-698e-5b99-bcbb-02090c942e18")
#: The namespace of derived document ids: ``uuid5(LORAG_NAMESPACE, "document")``.
DOCUMENT_NAMESPACE = uuid.uuid5(LORAG_NAMESPACE, "document")

HASH_VERSION = 1
MAX_DOCUMENT_ID_CHARS = 256

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

MetadataScalar = str | int | float | bool | datetime
MetadataValue = MetadataScalar | list[str] | list[int] | list[float] | list[bool]


@dataclass(frozen=True)
class DocumentInput:
    """One document to ingest, as the gateway contract's ``Document`` carries it (content is text or bytes)."""

    tenant: str
    collection: str
    content: str | bytes
    mime_type: str = ""
    id: str = ""
    source_uri: str = ""
    title: str = ""
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """A chunk ready to embed and index: ``text == document.text[char_start:char_end]``."""

    id: str
    index: int
    text: str
    char_start: int
    char_end: int
    token_count: int


@dataclass(frozen=True)
class PreparedDocument:
    """A parsed, validated, hashed and chunked document, with its ids; everything ingest writes but the vectors."""

    id: str
    tenant: str
    collection: str
    title: str  # the caller's, else the content's; "" when neither has one
    source_uri: str
    metadata: Mapping[str, MetadataValue]
    text: str
    mime_type: str
    content_sha256: str
    chunks: tuple[PreparedChunk, ...]

    @property
    def token_count(self) -> int:
        """Tokens over all chunks (overlaps counted in each chunk): what embedding the document costs."""
        return sum(chunk.token_count for chunk in self.chunks)


# --------------------------------------------------------------------------------------------------------------
# Names and validation


def tenant_violation(tenant: str, field_path: str = "tenant") -> FieldViolation | None:
    """Why ``tenant`` is not a valid tenant name, or ``None``."""
    return names.TENANT.violation(tenant, field_path)


def collection_violation(collection: str, field_path: str = "collection") -> FieldViolation | None:
    """Why ``collection`` is not a valid collection name, or ``None``."""
    return names.COLLECTION.violation(collection, field_path)


def document_id_violation(document_id: str, field_path: str = "document.id") -> FieldViolation | None:
    """Why a caller's document id is invalid (empty is valid: one is derived), or ``None``."""
    if not document_id:
        return None
    if len(document_id) > MAX_DOCUMENT_ID_CHARS:
        return FieldViolation(field_path, f"is {len(document_id)} characters; the limit is {MAX_DOCUMENT_ID_CHARS}")
    if not document_id.isprintable():
        return FieldViolation(field_path, "must be printable characters (no control characters or line breaks)")
    return None


def _int_ok(value: int) -> bool:
    return _INT64_MIN <= value <= _INT64_MAX


def _normalize_metadata_value(value: object, path: str) -> tuple[MetadataValue | None, str | None]:
    """The validated value (datetimes made UTC-aware, int/float lists unified) or a description of the problem."""
    if isinstance(value, (bool, str)):
        return value, None
    if isinstance(value, int):
        return (value, None) if _int_ok(value) else (None, "is out of the 64-bit integer range")
    if isinstance(value, float):
        return (value, None) if math.isfinite(value) else (None, "must be a finite number (not NaN or infinity)")
    if isinstance(value, datetime):
        return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)), None
    if isinstance(value, list | tuple):
        items = list(value)
        if all(isinstance(v, str) for v in items) or all(isinstance(v, bool) for v in items):
            return items, None
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            bad = next((i for i, v in enumerate(items) if not _int_ok(v)), None)
            if bad is not None:
                return None, f"[{bad}] is out of the 64-bit integer range"
            return items, None
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            bad = next((i for i, v in enumerate(items) if not math.isfinite(v)), None)
            if bad is not None:
                return None, f"[{bad}] must be a finite number (not NaN or infinity)"
            return [float(v) for v in items], None
        kinds = sorted({type(v).__name__ for v in items})
        return None, f"must be a list of one type (strings, integers, numbers or booleans), not of {', '.join(kinds)}"
    return None, f"has an unsupported type {type(value).__name__}"


def validate_metadata(
    metadata: Mapping[str, object], field_path: str = "document.metadata"
) -> tuple[dict[str, MetadataValue], list[FieldViolation]]:
    """Check metadata keys and values; return the normalised metadata and the violations found."""
    clean: dict[str, MetadataValue] = {}
    violations: list[FieldViolation] = []
    for key, value in metadata.items():
        path = f"{field_path}[{json.dumps(key, ensure_ascii=False)}]"
        if not isinstance(key, str) or not names.METADATA_KEY.matches(key):
            violations.append(
                FieldViolation(
                    path, "keys are 1 to 63 characters: a letter or underscore, then letters, digits or underscores"
                )
            )
            continue
        normalized, problem = _normalize_metadata_value(value, path)
        if problem is not None:
            violations.append(FieldViolation(path, problem))
        else:
            clean[key] = normalized  # type: ignore[assignment]  # not None: no problem was found
    return clean, violations


def _raise(violations: list[FieldViolation]) -> None:
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(message=f"{first.field}: {first.description}{more}", violations=list(violations))


def validate_document(document: DocumentInput) -> dict[str, MetadataValue]:
    """Validate a document's names, id and metadata; return its normalised metadata. Raises InvalidArgument
    listing every violation (``document.tenant``, ``document.collection``, ``document.id``,
    ``document.metadata["key"]``)."""
    violations = [
        v
        for v in (
            tenant_violation(document.tenant, "document.tenant"),
            collection_violation(document.collection, "document.collection"),
            document_id_violation(document.id, "document.id"),
        )
        if v is not None
    ]
    metadata, metadata_violations = validate_metadata(document.metadata)
    _raise(violations + metadata_violations)
    return metadata


# --------------------------------------------------------------------------------------------------------------
# Ids and hashes


def text_sha256(text: str) -> str:
    """The lower-case hex SHA-256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def derive_document_id(source_uri: str, text: str) -> str:
    """The id of a document the caller gave none: a UUID5 of its source_uri, else of its text's SHA-256."""
    return str(uuid.uuid5(DOCUMENT_NAMESPACE, source_uri or text_sha256(text)))


def chunk_id(collection: str, tenant: str, document_id: str, chunk_index: int) -> str:
    """The deterministic id of a document's chunk (a UUID5; see the module docstring)."""
    name = f"{names.normalize_collection(collection)}/{tenant}/{document_id}/{chunk_index}"
    return str(uuid.uuid5(LORAG_NAMESPACE, name))


def _tagged(value: MetadataValue) -> list[object]:
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, str):
        return ["string", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["double", value]
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return ["timestamp", aware.isoformat(timespec="microseconds")]
    items = list(value)
    if not items:
        return ["list", []]
    first = items[0]
    kind = (
        "bool_list"
        if isinstance(first, bool)
        else "string_list"
        if isinstance(first, str)
        else "int_list"
        if isinstance(first, int) and all(isinstance(v, int) for v in items)
        else "double_list"
    )
    if kind == "double_list":
        items = [float(cast(float, v)) for v in items]  # validated numbers (see _normalize_metadata_value)
    return [kind, items]


def content_sha256(
    text: str, title: str = "", source_uri: str = "", metadata: Mapping[str, MetadataValue] | None = None
) -> str:
    """The document hash that tells a changed document from an unchanged one (see the module docstring)."""
    header = json.dumps(
        {
            "v": HASH_VERSION,
            "title": title,
            "source_uri": source_uri,
            "metadata": {key: _tagged(value) for key, value in (metadata or {}).items()},
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )
    digest = hashlib.sha256(header.encode("utf-8", "surrogatepass"))
    digest.update(b"\n")
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _finish(
    document: DocumentInput,
    metadata: dict[str, MetadataValue],
    text: str,
    parsed_title: str | None,
    mime_type: str,
    chunks: list[TextChunk],
) -> PreparedDocument:
    if not chunks:
        field_path = TEXT_FIELD if isinstance(document.content, str) else DATA_FIELD
        raise InvalidArgument.of(field_path, "the document has no tokens to index", reason=EMPTY_DOCUMENT)
    title = document.title.strip() or parsed_title or ""
    document_id = document.id or derive_document_id(document.source_uri, text)
    return PreparedDocument(
        id=document_id,
        tenant=document.tenant,
        collection=document.collection,
        title=title,
        source_uri=document.source_uri,
        metadata=metadata,
        text=text,
        mime_type=mime_type,
        content_sha256=content_sha256(text, title, document.source_uri, metadata),
        chunks=tuple(
            PreparedChunk(
                id=chunk_id(document.collection, document.tenant, document_id, c.index),
                index=c.index,
                text=c.text,
                char_start=c.char_start,
                char_end=c.char_end,
                token_count=c.token_count,
            )
            for c in chunks
        ),
    )


def prepare_document(
    document: DocumentInput, chunker: Chunker, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> PreparedDocument:
    """Validate, parse, chunk, hash and id one document.

    Raises InvalidArgument: field violations (see :func:`validate_document`), or a parsing error (reasons
    UNSUPPORTED_MIME_TYPE, INVALID_ENCODING, EMPTY_DOCUMENT, DOCUMENT_TOO_LARGE, UNPARSABLE_DOCUMENT).
    """
    metadata = validate_document(document)
    parsed = parse(document.content, document.mime_type, document.source_uri, max_bytes=max_bytes)
    return _finish(document, metadata, parsed.text, parsed.title, parsed.mime_type, chunker.chunk(parsed.text))


def prepare_documents(
    documents: Sequence[DocumentInput], chunker: Chunker, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[PreparedDocument | InvalidArgument]:
    """Prepare several documents with one chunker, tokenizing them in one batch (faster than one by one).

    Returns, per document in order, its PreparedDocument or the InvalidArgument that refused it.
    """
    results: list[PreparedDocument | InvalidArgument | None] = [None] * len(documents)
    pending: list[tuple[int, dict[str, MetadataValue], str, str | None, str]] = []
    for i, document in enumerate(documents):
        try:
            metadata = validate_document(document)
            parsed = parse(document.content, document.mime_type, document.source_uri, max_bytes=max_bytes)
        except InvalidArgument as exc:
            results[i] = exc
            continue
        pending.append((i, metadata, parsed.text, parsed.title, parsed.mime_type))
    all_chunks = chunker.chunk_many([text for _, _, text, _, _ in pending])
    for (i, metadata, text, title, mime), chunks in zip(pending, all_chunks, strict=True):
        try:
            results[i] = _finish(documents[i], metadata, text, title, mime, chunks)
        except InvalidArgument as exc:
            results[i] = exc
    return results  # type: ignore[return-value]  # every slot was filled by one of the two loops


__all__ = [
    "DOCUMENT_NAMESPACE",
    "LORAG_NAMESPACE",
    "MAX_DOCUMENT_ID_CHARS",
    "DocumentInput",
    "MetadataValue",
    "PreparedChunk",
    "PreparedDocument",
    "chunk_id",
    "collection_violation",
    "content_sha256",
    "derive_document_id",
    "document_id_violation",
    "prepare_document",
    "prepare_documents",
    "tenant_violation",
    "text_sha256",
    "validate_document",
    "validate_metadata",
]
