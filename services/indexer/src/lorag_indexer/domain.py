"""The indexer's domain model: what the handlers hand the store and what the store answers, in plain objects.

The proto edge (``lorag_indexer.convert``) builds these from requests and turns results back into messages; the
store (``lorag_indexer.backends``) takes and returns nothing else. Neither protobuf nor the Weaviate SDK is imported
here, so both sides can change without the other noticing.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

from lorag_core.errors import FieldViolation, InvalidArgument

# -- types ---------------------------------------------------------------------------------------------------------


class MetadataType(enum.Enum):
    """The stored type of a metadata key (``lorag.common.v1.MetadataType`` without its prefix)."""

    STRING = "string"
    INT = "int"
    DOUBLE = "double"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    STRING_LIST = "string_list"
    INT_LIST = "int_list"
    DOUBLE_LIST = "double_list"
    BOOL_LIST = "bool_list"

    @property
    def is_list(self) -> bool:
        return self.value.endswith("_list")

    @property
    def element(self) -> MetadataType:
        """The scalar type of a list type's elements (a scalar type is its own element)."""
        return MetadataType(self.value.removesuffix("_list")) if self.is_list else self

    @property
    def as_list(self) -> MetadataType | None:
        """The list type holding this scalar type, or None (there is no list of timestamps)."""
        try:
            return MetadataType(self.element.value + "_list")
        except ValueError:
            return None


class Distance(enum.Enum):
    """The metric of the vector index."""

    COSINE = "cosine"
    DOT = "dot"
    L2_SQUARED = "l2-squared"
    MANHATTAN = "manhattan"
    HAMMING = "hamming"


class SearchMode(enum.Enum):
    VECTOR = "vector"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


class Fusion(enum.Enum):
    """How hybrid search fuses its keyword and vector rankings."""

    RANKED = "ranked"
    RELATIVE_SCORE = "relative_score"


class TenantActivity(enum.Enum):
    UNSPECIFIED = "unspecified"
    ACTIVE = "active"
    INACTIVE = "inactive"
    OFFLOADED = "offloaded"


@dataclass(frozen=True)
class TypedValue:
    """One metadata value with its declared type (an empty list still knows its element type)."""

    type: MetadataType
    value: Any


# -- collections and tenants ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HnswSettings:
    distance: Distance
    ef: int
    ef_construction: int
    max_connections: int


@dataclass(frozen=True)
class Bm25Settings:
    k1: float
    b: float


@dataclass(frozen=True)
class CollectionInfo:
    """A lorag collection: its stored name (first letter upper-case) and everything the contract describes."""

    name: str
    dimensions: int
    hnsw: HnswSettings
    bm25: Bm25Settings
    embedding_model: str = ""
    description: str = ""
    metadata_fields: dict[str, MetadataType] = field(default_factory=dict)


@dataclass(frozen=True)
class Tenant:
    name: str
    activity: TenantActivity


# -- chunks and documents ------------------------------------------------------------------------------------------


@dataclass
class ChunkData:
    """A chunk as stored: ids, text, span, document fields and typed metadata; ``vector`` when written or asked."""

    chunk_id: str
    document_id: str
    text: str = ""
    char_start: int = 0
    char_end: int = 0
    token_count: int = 0
    chunk_index: int = 0
    title: str = ""
    source_uri: str = ""
    content_sha256: str = ""
    metadata: dict[str, TypedValue] = field(default_factory=dict)
    vector: list[float] | None = None


@dataclass(frozen=True)
class UpsertResult:
    upserted: int
    deleted_stale: int
    weaviate_ns: int


@dataclass(frozen=True)
class DeleteResult:
    documents: int
    chunks: int


@dataclass(frozen=True)
class DocumentState:
    document_id: str
    exists: bool
    content_sha256: str = ""
    chunk_count: int = 0
    title: str = ""
    source_uri: str = ""


Item = TypeVar("Item")


@dataclass
class Page(Generic[Item]):
    """One page of a listing: the items and whether more follow."""

    items: list[Item]
    more: bool


# -- filters -------------------------------------------------------------------------------------------------------

#: The chunk fields a filter may name besides ``metadata.<key>``, with their types.
BUILTIN_FILTER_FIELDS: dict[str, MetadataType] = {
    "document_id": MetadataType.STRING,
    "title": MetadataType.STRING,
    "source_uri": MetadataType.STRING,
    "content_sha256": MetadataType.STRING,
    "chunk_index": MetadataType.INT,
    "token_count": MetadataType.INT,
}
METADATA_FIELD_PREFIX = "metadata."


class FilterOp(enum.Enum):
    EQUAL = "equal"
    NOT_EQUAL = "not_equal"
    GREATER_THAN = "greater_than"
    GREATER_OR_EQUAL = "greater_or_equal"
    LESS_THAN = "less_than"
    LESS_OR_EQUAL = "less_or_equal"
    LIKE = "like"
    CONTAINS_ANY = "contains_any"
    CONTAINS_ALL = "contains_all"
    IS_NULL = "is_null"


@dataclass(frozen=True)
class Condition:
    """One comparison of a chunk field: a built-in name (``title``) or ``metadata.<key>``, with a checked operand.

    The operand already has the field's type: a scalar, a non-empty list for CONTAINS_*, a UTC ``datetime`` for
    timestamps, a bool for IS_NULL (true: the field is absent).
    """

    field: str
    op: FilterOp
    value: Any

    @property
    def metadata_key(self) -> str | None:
        """The metadata key this condition names, or None for a built-in field."""
        return self.field.removeprefix(METADATA_FIELD_PREFIX) if self.field.startswith(METADATA_FIELD_PREFIX) else None


@dataclass(frozen=True)
class AllOf:
    operands: tuple[Filter, ...]


@dataclass(frozen=True)
class AnyOf:
    operands: tuple[Filter, ...]


#: A filter tree; ``None`` where one is optional means "every chunk".
Filter: TypeAlias = Condition | AllOf | AnyOf


def all_of(operands: Sequence[Filter]) -> Filter:
    """AND of ``operands`` (at least one); a single operand stands alone."""
    return operands[0] if len(operands) == 1 else AllOf(tuple(operands))


def any_of(operands: Sequence[Filter]) -> Filter:
    """OR of ``operands`` (at least one); a single operand stands alone."""
    return operands[0] if len(operands) == 1 else AnyOf(tuple(operands))


# -- search --------------------------------------------------------------------------------------------------------


@dataclass
class SearchQuery:
    """One search over one tenant; ``filter`` None matches every chunk."""

    mode: SearchMode
    limit: int
    offset: int = 0
    text: str = ""
    vector: list[float] | None = None
    alpha: float = 0.5
    fusion: Fusion = Fusion.RELATIVE_SCORE
    filter: Filter | None = None
    keyword_properties: list[str] = field(default_factory=lambda: ["text", "title"])
    max_vector_distance: float | None = None
    metadata_keys: list[str] | None = None  # None: every key
    include_vectors: bool = False
    include_explanation: bool = False


@dataclass
class Hit:
    chunk: ChunkData
    score: float
    distance: float | None = None
    explanation: str = ""


@dataclass
class SearchResult:
    hits: list[Hit]
    weaviate_ns: int


# -- validation ----------------------------------------------------------------------------------------------------

MAX_VIOLATIONS = 50


class Violations:
    """Collects every bad field of a request, then raises one InvalidArgument (reason of the first problem)."""

    def __init__(self) -> None:
        self._items: list[tuple[FieldViolation, str]] = []

    def add(self, field: str, description: str, reason: str = "INVALID_ARGUMENT") -> None:
        if len(self._items) < MAX_VIOLATIONS:
            self._items.append((FieldViolation(field, description), reason))

    def add_violation(self, violation: FieldViolation | None, reason: str) -> bool:
        """Record ``violation`` when there is one (a name rule's verdict); True when it was recorded."""
        if violation is None:
            return False
        self.add(violation.field, violation.description, reason)
        return True

    def __bool__(self) -> bool:
        return bool(self._items)

    def raise_if_any(self) -> None:
        if not self._items:
            return
        violations = [v for v, _ in self._items]
        first, reason = self._items[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(message=f"{first.field}: {first.description}{more}", reason=reason, violations=violations)


def type_name(t: MetadataType) -> str:
    """The contract's name of a metadata type, as error messages quote it ("int", "string_list")."""
    return t.name.lower()


def check_chunks_against(info: CollectionInfo, chunks: list[ChunkData]) -> None:
    """Vector lengths and metadata types against the collection; keys it does not know yet are fine (new).

    Field paths are the UpsertChunks request's (``chunks[3].vector``): the store checks again after re-reading the
    schema, and its caller must see the same answer as the handler's own check would have given.
    """
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


__all__ = [
    "BUILTIN_FILTER_FIELDS",
    "METADATA_FIELD_PREFIX",
    "AllOf",
    "AnyOf",
    "Bm25Settings",
    "ChunkData",
    "CollectionInfo",
    "Condition",
    "DeleteResult",
    "Distance",
    "DocumentState",
    "Filter",
    "FilterOp",
    "Fusion",
    "Hit",
    "HnswSettings",
    "MetadataType",
    "Page",
    "SearchMode",
    "SearchQuery",
    "SearchResult",
    "Tenant",
    "TenantActivity",
    "TypedValue",
    "UpsertResult",
    "Violations",
    "all_of",
    "any_of",
    "check_chunks_against",
    "type_name",
]
