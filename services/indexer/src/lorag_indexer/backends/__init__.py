"""The indexer's domain objects and the interface of the store behind it.

Handlers convert protobuf messages into these plain objects (``lorag_indexer.convert``), call a :class:`ChunkStore`
and convert the results back. The one store is :class:`lorag_indexer.backends.weaviate_store.WeaviateStore`; the
interface exists so the handlers read as a description of the RPCs, not of Weaviate's client.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class MetadataType(enum.Enum):
    """The stored type of a metadata key (``lorag.common.v1.MetadataType``); the value is the Weaviate data type."""

    STRING = "text"
    INT = "int"
    DOUBLE = "number"
    BOOL = "boolean"
    TIMESTAMP = "date"
    STRING_LIST = "text[]"
    INT_LIST = "int[]"
    DOUBLE_LIST = "number[]"
    BOOL_LIST = "boolean[]"

    @property
    def is_list(self) -> bool:
        return self.value.endswith("[]")

    @property
    def element(self) -> MetadataType:
        """The scalar type of a list type's elements (a scalar type is its own element)."""
        return MetadataType(self.value.removesuffix("[]")) if self.is_list else self

    @property
    def as_list(self) -> MetadataType | None:
        """The list type holding this scalar type, or None (there is no list of timestamps)."""
        try:
            return MetadataType(self.element.value + "[]")
        except ValueError:
            return None


class Distance(enum.Enum):
    """The HNSW distance metric; the value is Weaviate's name for it."""

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
    """A lorag collection: its Weaviate name (first letter upper-case) and everything the contract describes."""

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


@dataclass
class SearchQuery:
    """One search over one tenant; ``filter`` is already a Weaviate filter (``None`` matches every chunk)."""

    mode: SearchMode
    limit: int
    offset: int = 0
    text: str = ""
    vector: list[float] | None = None
    alpha: float = 0.5
    fusion: Fusion = Fusion.RELATIVE_SCORE
    filter: Any = None
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


@dataclass
class Page:
    """One page of a listing: the items and whether more follow."""

    items: list[Any]
    more: bool


class ChunkStore(Protocol):
    """What the handlers need from a vector store; every method raises lorag_core.errors on failure."""

    async def start(self, wait: bool = True) -> None: ...
    async def close(self) -> None: ...

    async def create_collection(self, spec: CollectionInfo) -> CollectionInfo: ...
    async def get_collection(self, name: str, *, fresh: bool = False) -> CollectionInfo: ...
    async def list_collections(self, after: str | None, limit: int) -> Page: ...
    async def delete_collection(self, name: str, allow_missing: bool) -> None: ...

    async def list_tenants(self, collection: str, after: str | None, limit: int) -> Page: ...
    async def delete_tenant(self, collection: str, tenant: str, allow_missing: bool) -> None: ...

    async def upsert(
        self, info: CollectionInfo, tenant: str, chunks: list[ChunkData], delete_stale: bool
    ) -> UpsertResult: ...
    async def delete_documents(self, info: CollectionInfo, tenant: str, document_ids: list[str]) -> DeleteResult: ...
    async def document_states(
        self, info: CollectionInfo, tenant: str, document_ids: list[str]
    ) -> list[DocumentState]: ...
    async def list_documents(self, info: CollectionInfo, tenant: str, after: str | None, limit: int) -> Page: ...
    async def search(self, info: CollectionInfo, tenant: str, query: SearchQuery) -> SearchResult: ...


__all__ = [
    "Bm25Settings",
    "ChunkData",
    "ChunkStore",
    "CollectionInfo",
    "DeleteResult",
    "Distance",
    "DocumentState",
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
]
