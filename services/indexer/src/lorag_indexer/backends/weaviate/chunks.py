"""Chunk writes and document reads: batched upserts with retries, stale-chunk and document deletion, document states.

An upsert is sent in batches of ``batch_size`` objects. Weaviate answers a batch with per-object errors; the objects
that failed (and whole batches that failed for a transient reason) are retried with exponential backoff up to
``write_attempts`` tries. The call succeeds only when Weaviate confirmed every object; otherwise it fails, so nothing
is acknowledged that was not stored. Writes are idempotent (the object id is the chunk id), which is what makes the
retries and a caller's retry safe. Filters are written as domain filters and built by ``filters.build_filter``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from weaviate.classes.aggregate import GroupByAggregate, Metrics
from weaviate.classes.config import ConsistencyLevel
from weaviate.classes.data import DataObject
from weaviate.classes.query import Sort
from weaviate.client import WeaviateAsyncClient
from weaviate.exceptions import WeaviateInsertManyAllFailedError

from lorag_core.errors import NotFound
from lorag_indexer.backends.weaviate import errors
from lorag_indexer.backends.weaviate.connection import WeaviateConnection, weaviate_clock
from lorag_indexer.backends.weaviate.filters import build_filter
from lorag_indexer.backends.weaviate.retries import WriteRetries, incomplete
from lorag_indexer.backends.weaviate.schema import VECTOR_NAME, Schema, metadata_property
from lorag_indexer.domain import (
    ChunkData,
    CollectionInfo,
    Condition,
    DeleteResult,
    DocumentState,
    Filter,
    FilterOp,
    Page,
    UpsertResult,
    all_of,
    any_of,
)

T = TypeVar("T")

# Objects read per request while ListDocuments discovers the next document ids in order.
LIST_SCAN_OBJECTS = 1000
# Documents per delete/aggregate filter (each adds one operand to the filter Weaviate evaluates).
DOCUMENTS_PER_FILTER = 100
# Documents per aggregation (one group each).
DOCUMENTS_PER_AGGREGATE = 1000


def groups_of(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def properties_of(chunk: ChunkData) -> dict[str, Any]:
    """The Weaviate properties of ``chunk`` (its vector travels apart)."""
    props: dict[str, Any] = {
        "text": chunk.text,
        "title": chunk.title,
        "title_exact": chunk.title,
        "document_id": chunk.document_id,
        "source_uri": chunk.source_uri,
        "content_sha256": chunk.content_sha256,
        "chunk_index": chunk.chunk_index,
        "token_count": chunk.token_count,
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
    }
    for key, typed in chunk.metadata.items():
        props[metadata_property(key)] = typed.value
    return props


def _document(doc: str) -> Condition:
    return Condition("document_id", FilterOp.EQUAL, doc)


def _documents(docs: list[str]) -> Condition:
    return Condition("document_id", FilterOp.CONTAINS_ANY, docs)


def tenant_view(client: WeaviateAsyncClient, collection: str, tenant: str, consistency: ConsistencyLevel) -> Any:
    """One tenant of one collection, read and written at the configured consistency level."""
    return client.collections.get(collection).with_tenant(tenant).with_consistency_level(consistency)


class Chunks:
    """Writes, deletions and document reads over one tenant of a collection at a time."""

    def __init__(
        self, connection: WeaviateConnection, schema: Schema, retries: WriteRetries, written: Any = None
    ) -> None:
        self._connection = connection
        self._schema = schema
        self._retries = retries
        self._written = written  # lorag.indexer.chunks.written, when metrics are on
        self._batch_size = connection.settings.batch_size
        self._max_query_results = connection.settings.max_query_results
        self._consistency = ConsistencyLevel(connection.settings.consistency_level)

    def _view(self, client: WeaviateAsyncClient, collection: str, tenant: str) -> Any:
        return tenant_view(client, collection, tenant, self._consistency)

    # -- writes ----------------------------------------------------------------------------------------------------

    async def upsert(
        self, info: CollectionInfo, tenant: str, chunks: list[ChunkData], delete_stale: bool
    ) -> UpsertResult:
        name = info.name
        with (
            self._connection.step(
                "weaviate.upsert", collection=name, tenant=tenant, chunks=len(chunks), delete_stale=delete_stale
            ) as span,
            weaviate_clock() as clock,
        ):
            info = await self._schema.ensure_metadata(info, chunks)
            objects = [
                DataObject(uuid=c.chunk_id, properties=properties_of(c), vector={VECTOR_NAME: c.vector or []})
                for c in chunks
            ]
            for batch in groups_of(objects, self._batch_size):
                await self._write_batch(name, tenant, batch)
            if self._written is not None:
                self._written.add(len(objects), {"collection": name})
            deleted = 0
            if delete_stale:
                hashes = {c.document_id: c.content_sha256 for c in chunks}
                deleted = await self._delete_stale(name, tenant, hashes)
            span.set_attribute("lorag.indexer.deleted_stale", deleted)
            return UpsertResult(upserted=len(objects), deleted_stale=deleted, weaviate_ns=clock[0])

    async def _write_batch(self, collection: str, tenant: str, batch: list[DataObject[Any, Any]]) -> None:
        pending = batch

        async def insert(client: WeaviateAsyncClient) -> dict[int, str]:
            """Per pending object that failed, Weaviate's error; NotFound when the collection or tenant is gone."""
            try:
                result = await self._view(client, collection, tenant).data.insert_many(pending)
            except WeaviateInsertManyAllFailedError as exc:
                failed = {i: str(exc) for i in range(len(pending))}
            else:
                failed = {index: error.message for index, error in result.errors.items()}
            if failed:
                # Per-object errors are sentences only (see errors.not_found_in_message).
                missing = errors.not_found_in_message(next(iter(failed.values())), collection, tenant)
                if missing is not None:
                    raise missing
            return failed

        async def attempt() -> None:
            nonlocal pending
            failed = await self._connection.call(
                f"write {len(pending)} chunks",
                insert,
                write=True,
                collection=collection,
                tenant=tenant,
                operation="insert_many",
            )
            if failed:
                pending = [pending[i] for i in sorted(failed)]
                first = next(iter(failed.values()))
                raise incomplete(
                    f"Weaviate did not confirm {len(pending)} of {len(batch)} chunks: {first}", len(pending)
                )

        await self._retries.run("write chunks", attempt)

    async def _delete_where(self, collection: str, tenant: str, where: Filter, what: str) -> int:
        """Delete every object matching ``where`` (in rounds of at most max_query_results); return how many."""
        deleted = 0
        built = build_filter(where)

        async def delete(client: WeaviateAsyncClient) -> Any:
            return await self._view(client, collection, tenant).data.delete_many(where=built)

        async def attempt() -> Any:
            nonlocal deleted
            result = await self._connection.call(
                what, delete, write=True, collection=collection, tenant=tenant, operation="delete_many"
            )
            if result.failed:
                deleted += result.successful
                raise incomplete(f"Weaviate failed to delete {result.failed} of {result.matches} chunks", result.failed)
            return result

        while True:
            result = await self._retries.run(what, attempt)
            deleted += int(result.successful)
            if result.matches < self._max_query_results:
                return deleted

    async def _delete_stale(self, collection: str, tenant: str, hashes: dict[str, str]) -> int:
        """Delete each document's chunks whose content hash is not the one just written."""
        deleted = 0
        for group in groups_of(sorted(hashes), DOCUMENTS_PER_FILTER):
            stale = [
                all_of([_document(doc), Condition("content_sha256", FilterOp.NOT_EQUAL, hashes[doc])]) for doc in group
            ]
            deleted += await self._delete_where(collection, tenant, any_of(stale), "delete stale chunks")
        return deleted

    async def delete_documents(self, info: CollectionInfo, tenant: str, document_ids: list[str]) -> DeleteResult:
        name = info.name
        with self._connection.step(
            "weaviate.delete_documents", collection=name, tenant=tenant, documents=len(document_ids)
        ) as span:
            stats = await self._document_stats(name, tenant, list(dict.fromkeys(document_ids)))
            found = sorted(stats)
            chunks = 0
            for group in groups_of(found, DOCUMENTS_PER_FILTER):
                chunks += await self._delete_where(name, tenant, _documents(group), "delete documents")
            span.set_attribute("lorag.indexer.deleted_chunks", chunks)
            return DeleteResult(documents=len(found), chunks=chunks)

    # -- document states -------------------------------------------------------------------------------------------

    async def _document_stats(self, collection: str, tenant: str, ids: list[str]) -> dict[str, DocumentState]:
        """Per document id that has chunks: its chunk count, agreed content hash, title and source URI."""
        states: dict[str, DocumentState] = {}
        for group in groups_of(ids, DOCUMENTS_PER_AGGREGATE):

            async def aggregate(client: WeaviateAsyncClient, group: list[str] = group) -> Any:
                return await self._view(client, collection, tenant).aggregate.over_all(
                    filters=build_filter(_documents(group)),
                    group_by=GroupByAggregate(prop="document_id", limit=len(group)),
                    total_count=True,
                    return_metrics=[
                        Metrics("content_sha256").text(top_occurrences_count=True, top_occurrences_value=True, limit=2),
                        Metrics("title_exact").text(top_occurrences_count=True, top_occurrences_value=True, limit=1),
                        Metrics("source_uri").text(top_occurrences_count=True, top_occurrences_value=True, limit=1),
                    ],
                )

            result = await self._connection.call(
                "read document states", aggregate, collection=collection, tenant=tenant, operation="aggregate"
            )
            for g in result.groups:
                doc = str(g.grouped_by.value)
                count = int(g.total_count or 0)
                if count == 0:
                    continue
                hashes = g.properties["content_sha256"].top_occurrences
                agreed = len(hashes) == 1 and hashes[0].count == count
                titles = g.properties["title_exact"].top_occurrences
                uris = g.properties["source_uri"].top_occurrences
                states[doc] = DocumentState(
                    document_id=doc,
                    exists=True,
                    content_sha256=str(hashes[0].value) if agreed else "",
                    chunk_count=count,
                    title=str(titles[0].value) if titles else "",
                    source_uri=str(uris[0].value) if uris else "",
                )
        return states

    async def document_states(self, info: CollectionInfo, tenant: str, document_ids: list[str]) -> list[DocumentState]:
        with self._connection.step(
            "weaviate.document_states", collection=info.name, tenant=tenant, documents=len(document_ids)
        ):
            try:
                stats = await self._document_stats(info.name, tenant, list(dict.fromkeys(document_ids)))
            except NotFound as exc:
                if exc.reason != "TENANT_NOT_FOUND":
                    raise
                stats = {}  # the contract: a missing tenant holds no documents
            return [stats.get(doc) or DocumentState(document_id=doc, exists=False) for doc in document_ids]

    async def list_documents(
        self, info: CollectionInfo, tenant: str, after: str | None, limit: int
    ) -> Page[DocumentState]:
        name = info.name
        with self._connection.step("weaviate.list_documents", collection=name, tenant=tenant, limit=limit):
            ids: list[str] = []
            cursor = after
            while len(ids) <= limit:
                where = build_filter(
                    Condition("document_id", FilterOp.GREATER_THAN, cursor) if cursor is not None else None
                )

                async def scan(client: WeaviateAsyncClient, where: Any = where) -> Any:
                    return await self._view(client, name, tenant).query.fetch_objects(
                        filters=where,
                        sort=Sort.by_property("document_id", ascending=True),
                        limit=LIST_SCAN_OBJECTS,
                        return_properties=["document_id"],
                    )

                found = await self._connection.call(
                    "list documents", scan, collection=name, tenant=tenant, operation="fetch_objects"
                )
                objects = found.objects
                for obj in objects:
                    doc = obj.properties.get("document_id") or ""
                    if not ids or ids[-1] != doc:
                        ids.append(doc)
                if len(objects) < LIST_SCAN_OBJECTS:
                    break
                cursor = objects[-1].properties.get("document_id") or ""
            more = len(ids) > limit
            ids = ids[:limit]
            stats = await self._document_stats(name, tenant, ids) if ids else {}
            return Page(items=[stats[doc] for doc in ids if doc in stats], more=more)


__all__ = ["Chunks", "groups_of", "properties_of", "tenant_view"]
