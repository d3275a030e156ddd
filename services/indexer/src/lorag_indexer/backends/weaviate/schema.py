"""Collections, tenants and properties: how a lorag collection is laid out in Weaviate, and the calls that manage it.

One Weaviate collection per lorag collection, multi-tenant with automatic tenant creation and activation, one
self-provided named vector ``default`` with an HNSW index, BM25 on ``text`` and ``title``. The collection's lorag
settings that Weaviate does not keep (vector dimensions, embedding model, description) are stored as a JSON envelope
in the Weaviate collection description; collections without it were not created by lorag and are invisible to the
indexer. Metadata keys are flattened into ``meta_<key>`` properties created on first use, because Weaviate can only
filter flat properties (see docs/indexer.md). Schema calls go over Weaviate's REST API, tenant reads over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.tenants import TenantActivityStatus
from weaviate.client import WeaviateAsyncClient

from lorag_core.errors import AlreadyExists, NotFound
from lorag_core.telemetry import get_logger
from lorag_indexer.backends.weaviate import errors
from lorag_indexer.backends.weaviate.connection import WeaviateConnection
from lorag_indexer.domain import (
    Bm25Settings,
    ChunkData,
    CollectionInfo,
    Distance,
    HnswSettings,
    MetadataType,
    Page,
    Tenant,
    TenantActivity,
    check_chunks_against,
)

log = get_logger(__name__)

VECTOR_NAME = "default"
ENVELOPE_KEY = "lorag"
ENVELOPE_VERSION = 1
METADATA_PREFIX = "meta_"

# Properties every chunk has, read back on every hit.
CHUNK_PROPERTIES = [
    "text",
    "title",
    "document_id",
    "source_uri",
    "content_sha256",
    "chunk_index",
    "token_count",
    "char_start",
    "char_end",
]

#: The property a built-in filter field compares (the title's whole-value copy, not its word-tokenized one).
FILTER_PROPERTIES = {"title": "title_exact"}

WEAVIATE_TYPES = {
    MetadataType.STRING: DataType.TEXT,
    MetadataType.INT: DataType.INT,
    MetadataType.DOUBLE: DataType.NUMBER,
    MetadataType.BOOL: DataType.BOOL,
    MetadataType.TIMESTAMP: DataType.DATE,
    MetadataType.STRING_LIST: DataType.TEXT_ARRAY,
    MetadataType.INT_LIST: DataType.INT_ARRAY,
    MetadataType.DOUBLE_LIST: DataType.NUMBER_ARRAY,
    MetadataType.BOOL_LIST: DataType.BOOL_ARRAY,
}
_METADATA_TYPES = {dt.value: mt for mt, dt in WEAVIATE_TYPES.items()}

_DISTANCES = {
    Distance.COSINE: VectorDistances.COSINE,
    Distance.DOT: VectorDistances.DOT,
    Distance.L2_SQUARED: VectorDistances.L2_SQUARED,
    Distance.MANHATTAN: VectorDistances.MANHATTAN,
    Distance.HAMMING: VectorDistances.HAMMING,
}
_DISTANCES_BACK = {wd.value: d for d, wd in _DISTANCES.items()}

_ACTIVITY = {
    TenantActivityStatus.ACTIVE: TenantActivity.ACTIVE,
    TenantActivityStatus.INACTIVE: TenantActivity.INACTIVE,
    TenantActivityStatus.OFFLOADED: TenantActivity.OFFLOADED,
}


def metadata_property(key: str) -> str:
    """The Weaviate property that stores metadata ``key``."""
    return METADATA_PREFIX + key


# -- properties ----------------------------------------------------------------------------------------------------


def _text(name: str, *, searchable: bool = False, filterable: bool = True) -> Property:
    return Property(
        name=name,
        data_type=DataType.TEXT,
        tokenization=Tokenization.WORD if searchable else Tokenization.FIELD,
        index_searchable=searchable,
        index_filterable=filterable,
    )


def builtin_properties() -> list[Property]:
    """The chunk's own fields. ``title`` is stored twice: word-tokenized for BM25, whole for filters."""
    return [
        _text("text", searchable=True, filterable=False),
        _text("title", searchable=True, filterable=False),
        _text("title_exact"),
        _text("document_id"),
        _text("source_uri"),
        _text("content_sha256"),
        Property(name="chunk_index", data_type=DataType.INT, index_filterable=True, index_range_filters=True),
        Property(name="token_count", data_type=DataType.INT, index_filterable=True, index_range_filters=True),
        Property(name="char_start", data_type=DataType.INT, index_filterable=False, index_range_filters=False),
        Property(name="char_end", data_type=DataType.INT, index_filterable=False, index_range_filters=False),
    ]


def metadata_schema_property(key: str, mtype: MetadataType) -> Property:
    """A ``meta_<key>`` property: filterable, whole-value tokenized text, range-indexed scalars."""
    data_type = WEAVIATE_TYPES[mtype]
    if mtype.element is MetadataType.STRING:
        return Property(
            name=metadata_property(key),
            data_type=data_type,
            tokenization=Tokenization.FIELD,
            index_searchable=False,
            index_filterable=True,
        )
    ranged = mtype in (MetadataType.INT, MetadataType.DOUBLE, MetadataType.TIMESTAMP)
    return Property(name=metadata_property(key), data_type=data_type, index_filterable=True, index_range_filters=ranged)


# -- the envelope --------------------------------------------------------------------------------------------------


def envelope(info: CollectionInfo) -> str:
    """The Weaviate collection description that marks a collection as lorag's and keeps what Weaviate does not."""
    return json.dumps(
        {
            ENVELOPE_KEY: {
                "v": ENVELOPE_VERSION,
                "dimensions": info.dimensions,
                "embedding_model": info.embedding_model,
                "description": info.description,
            }
        },
        separators=(",", ":"),
    )


def info_from_config(config: Any) -> CollectionInfo | None:
    """A lorag collection from a Weaviate CollectionConfig, or None when lorag did not create it."""
    try:
        stored = json.loads(config.description or "")[ENVELOPE_KEY]
        dimensions = int(stored["dimensions"])
        vector = (config.vector_config or {})[VECTOR_NAME].vector_index_config
        distance = _DISTANCES_BACK[getattr(vector.distance_metric, "value", vector.distance_metric)]
        if not config.multi_tenancy_config.enabled:
            return None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    metadata: dict[str, MetadataType] = {}
    for prop in config.properties:
        if prop.name.startswith(METADATA_PREFIX):
            mtype = _METADATA_TYPES.get(getattr(prop.data_type, "value", prop.data_type))
            if mtype is not None:
                metadata[prop.name[len(METADATA_PREFIX) :]] = mtype
    bm25 = config.inverted_index_config.bm25
    return CollectionInfo(
        name=config.name,
        dimensions=dimensions,
        hnsw=HnswSettings(
            distance=distance,
            ef=int(vector.ef),
            ef_construction=int(vector.ef_construction),
            max_connections=int(vector.max_connections),
        ),
        bm25=Bm25Settings(k1=float(bm25.k1), b=float(bm25.b)),
        embedding_model=str(stored.get("embedding_model", "")),
        description=str(stored.get("description", "")),
        metadata_fields=metadata,
    )


# -- the calls -----------------------------------------------------------------------------------------------------


class Schema:
    """Collections (cached for ``schema_cache_seconds``), their metadata properties, and tenants."""

    def __init__(self, connection: WeaviateConnection) -> None:
        self._connection = connection
        self._cache_seconds = connection.settings.schema_cache_seconds
        self._cached: dict[str, tuple[float, CollectionInfo]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        connection.on_collection_missing = self.forget

    def forget(self, name: str) -> None:
        """Drop ``name`` from the cache (a call found it missing)."""
        self._cached.pop(name, None)

    def _remember(self, info: CollectionInfo, at: float | None = None) -> None:
        self._cached[info.name] = (time.monotonic() if at is None else at, info)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # -- collections -----------------------------------------------------------------------------------------------

    async def get_collection(self, name: str, *, fresh: bool = False) -> CollectionInfo:
        """The lorag collection ``name`` (normalised); NotFound when it does not exist or lorag did not create it."""
        cached = self._cached.get(name)
        if cached is not None and not fresh and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]

        async def read(client: WeaviateAsyncClient) -> Any:
            return await client.collections.get(name).config.get()

        config = await self._connection.call(
            f"read collection {name}", read, collection=name, operation="get_collection", rest=True
        )
        info = info_from_config(config)
        if info is None:
            raise NotFound(
                f"Weaviate has a collection named {name!r} that lorag did not create; the indexer does not use it",
                reason="FOREIGN_COLLECTION",
                metadata={"collection": name},
            )
        self._remember(info)
        return info

    async def create_collection(self, spec: CollectionInfo) -> CollectionInfo:
        name = spec.name
        with self._connection.step("weaviate.collections.create", collection=name, dimensions=spec.dimensions):
            hnsw = Configure.VectorIndex.hnsw(
                distance_metric=_DISTANCES[spec.hnsw.distance],
                ef=spec.hnsw.ef,
                ef_construction=spec.hnsw.ef_construction,
                max_connections=spec.hnsw.max_connections,
            )
            properties = builtin_properties() + [
                metadata_schema_property(key, t) for key, t in sorted(spec.metadata_fields.items())
            ]

            async def exists(client: WeaviateAsyncClient) -> bool:
                return await client.collections.exists(name)

            async def create(client: WeaviateAsyncClient) -> None:
                await client.collections.create(
                    name,
                    description=envelope(spec),
                    properties=properties,
                    vector_config=Configure.Vectors.self_provided(name=VECTOR_NAME, vector_index_config=hnsw),
                    multi_tenancy_config=Configure.multi_tenancy(
                        enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
                    ),
                    inverted_index_config=Configure.inverted_index(
                        bm25_b=spec.bm25.b, bm25_k1=spec.bm25.k1, index_null_state=True
                    ),
                )

            collision = AlreadyExists(
                f"a collection named {name!r} exists", reason="COLLECTION_EXISTS", metadata={"collection": name}
            )
            call = self._connection.call
            async with self._lock(name):
                if await call(
                    f"check collection {name}", exists, collection=name, operation="collection_exists", rest=True
                ):
                    raise collision
                try:
                    await call(
                        f"create collection {name}",
                        create,
                        write=True,
                        collection=name,
                        operation="create_collection",
                        rest=True,
                    )
                except AlreadyExists:
                    raise collision from None
            self._remember(spec)
            log.info(
                "collection created", collection=name, dimensions=spec.dimensions, distance=spec.hnsw.distance.value
            )
            return spec

    async def list_collections(self, after: str | None, limit: int) -> Page[CollectionInfo]:
        async def list_all(client: WeaviateAsyncClient) -> dict[str, Any]:
            return await client.collections.list_all(simple=False)

        with self._connection.step("weaviate.collections.list", limit=limit):
            configs = await self._connection.call("list collections", list_all, operation="list_collections", rest=True)
            infos = sorted(
                (info for config in configs.values() if (info := info_from_config(config)) is not None),
                key=lambda info: info.name,
            )
            if after is not None:
                infos = [info for info in infos if info.name > after]
            now = time.monotonic()
            for info in infos:
                self._remember(info, now)
            return Page(items=infos[:limit], more=len(infos) > limit)

    async def delete_collection(self, name: str, allow_missing: bool) -> None:
        with self._connection.step("weaviate.collections.delete", collection=name):
            try:
                await self.get_collection(name, fresh=True)
            except NotFound as exc:
                if allow_missing and exc.reason == "COLLECTION_NOT_FOUND":
                    return
                raise

            async def delete(client: WeaviateAsyncClient) -> None:
                await client.collections.delete(name)

            async with self._lock(name):
                await self._connection.call(
                    f"delete collection {name}",
                    delete,
                    write=True,
                    collection=name,
                    operation="delete_collection",
                    rest=True,
                )
                self.forget(name)
            log.info("collection deleted", collection=name)

    async def ensure_metadata(self, info: CollectionInfo, chunks: list[ChunkData]) -> CollectionInfo:
        """Create the ``meta_<key>`` properties this batch needs; refuse values whose type conflicts."""
        missing = {
            key: typed.type
            for chunk in chunks
            for key, typed in chunk.metadata.items()
            if key not in info.metadata_fields
        }
        if not missing:
            return info
        async with self._lock(info.name):
            info = await self.get_collection(info.name, fresh=True)
            check_chunks_against(info, chunks)  # another writer may have typed a key differently meanwhile
            for key, mtype in sorted(missing.items()):
                if key in info.metadata_fields:
                    continue
                prop = metadata_schema_property(key, mtype)

                async def add(client: WeaviateAsyncClient, prop: Property = prop) -> None:
                    await client.collections.get(info.name).config.add_property(prop)

                with contextlib.suppress(AlreadyExists):  # a concurrent writer won; the re-read below decides
                    await self._connection.call(
                        f"add metadata key {key!r}",
                        add,
                        write=True,
                        collection=info.name,
                        operation="add_property",
                        rest=True,
                    )
                log.info("metadata key added", collection=info.name, key=key, type=mtype.value)
            info = await self.get_collection(info.name, fresh=True)
        check_chunks_against(info, chunks)
        return info

    # -- tenants ---------------------------------------------------------------------------------------------------

    async def list_tenants(self, collection: str, after: str | None, limit: int) -> Page[Tenant]:
        with self._connection.step("weaviate.tenants.list", collection=collection, limit=limit):
            await self.get_collection(collection)

            async def get(client: WeaviateAsyncClient) -> dict[str, Any]:
                return await client.collections.get(collection).tenants.get()

            tenants = await self._connection.call(
                f"list tenants of {collection}", get, collection=collection, operation="list_tenants"
            )
            names = sorted(n for n in tenants if after is None or n > after)
            items = [
                Tenant(n, _ACTIVITY.get(tenants[n].activity_status, TenantActivity.UNSPECIFIED)) for n in names[:limit]
            ]
            return Page(items=items, more=len(names) > limit)

    async def delete_tenant(self, collection: str, tenant: str, allow_missing: bool) -> None:
        with self._connection.step("weaviate.tenants.delete", collection=collection, tenant=tenant):
            await self.get_collection(collection)

            async def get(client: WeaviateAsyncClient) -> Any:
                return await client.collections.get(collection).tenants.get_by_name(tenant)

            async def remove(client: WeaviateAsyncClient) -> None:
                await client.collections.get(collection).tenants.remove([tenant])

            call = self._connection.call
            if (
                await call(f"read tenant {tenant}", get, collection=collection, tenant=tenant, operation="get_tenant")
                is None
            ):
                if allow_missing:
                    return
                raise errors.tenant_not_found(collection, tenant)
            await call(
                f"delete tenant {tenant}",
                remove,
                write=True,
                collection=collection,
                tenant=tenant,
                operation="delete_tenant",
                rest=True,
            )
            log.info("tenant deleted", collection=collection, tenant=tenant)


__all__ = [
    "CHUNK_PROPERTIES",
    "FILTER_PROPERTIES",
    "METADATA_PREFIX",
    "VECTOR_NAME",
    "Schema",
    "builtin_properties",
    "envelope",
    "info_from_config",
    "metadata_property",
    "metadata_schema_property",
]
