"""What `lorag load` sets up before measuring, through the SDK clients (with their retries: nothing here is measured).

- ``ensure_corpus``: the collection/tenant holds documents; when missing or empty, the corpus files are ingested
  through the gateway, or, with no gateway serving, written straight to the indexer (vectors from the embedding
  service, else random unit vectors);
- ``query_vectors``: query vectors for indexer Search, from the embedding service, else random unit vectors.

Each returns a note saying what it found or did, for the report.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from lorag.gateway.v1 import gateway_service_pb2
from lorag_cli.load.payloads import (
    LoadOptions,
    TextSource,
    corpus_files,
    default_corpus_dir,
    load_chunk,
    random_unit_vector,
)
from lorag_client import (
    AlreadyExists,
    EmbeddingClient,
    GatewayClient,
    IndexerClient,
    LoragError,
    NotFound,
    ServiceClient,
    document,
)
from lorag_core import probe

DEFAULT_DIMENSIONS = 384  # The collection's size when no embedding service says otherwise.


async def ensure_corpus(options: LoadOptions, text: TextSource, address_of: Callable[[str], str]) -> str:
    """Make sure ``collection``/``tenant`` holds documents; return what was found or done."""
    where = f"{options.collection}/{options.tenant}"
    async with IndexerClient(address_of("indexer")) as indexer:
        try:
            listed = await indexer.list_documents(options.collection, options.tenant, page_size=1, timeout=10)
            if listed.documents:
                return f"corpus {where} already holds documents"
        except NotFound:
            pass
        except LoragError as error:
            return f"corpus {where} not checked (indexer: {error.code.name}); prepare skipped"
        files = corpus_files(options.corpus or default_corpus_dir())
        async with GatewayClient(address_of("gateway")) as gateway:
            if await _serving(gateway):
                count = await _ingest_through_gateway(gateway, options, files, text)
                return f"prepare ingested {count} documents into {where} through the gateway"
        count = await _write_through_indexer(indexer, options, text, address_of)
        return f"prepare wrote {count} chunks into {where} through the indexer (no gateway reachable)"


async def _serving(client: ServiceClient) -> bool:
    """Whether the server behind ``client`` is SERVING, by the chassis' health probe (off the event loop)."""
    serving, _ = await asyncio.to_thread(probe.check, client.target)
    return serving


async def _ingest_through_gateway(
    gateway: GatewayClient, options: LoadOptions, files: list[Path], text: TextSource
) -> int:
    if files:
        documents = [
            document(
                tenant=options.tenant,
                collection=options.collection,
                id=path.name,
                source_uri=path.name,
                text=path.read_text(errors="replace"),
            )
            for path in files
        ]
    else:
        documents = [
            document(tenant=options.tenant, collection=options.collection, id=f"fallback-{i}", text=sentence)
            for i, sentence in enumerate(text.sentences)
        ]
    async for response in gateway.ingest(documents, timeout=600):
        if response.HasField("result") and response.result.outcome == gateway_service_pb2.INGEST_OUTCOME_FAILED:
            raise RuntimeError(f"prepare could not ingest {response.result.document_id}: {response.result.reason}")
    return len(documents)


async def _write_through_indexer(
    indexer: IndexerClient, options: LoadOptions, text: TextSource, address_of: Callable[[str], str]
) -> int:
    passages = text.sentences[:200]
    vectors, _ = await _embed(address_of("embedding"), passages, query=False)
    dims = len(vectors[0]) if vectors else DEFAULT_DIMENSIONS
    try:
        await indexer.create_collection(options.collection, dims, timeout=30)
    except AlreadyExists:
        pass
    rng = random.Random(options.seed)
    records = [
        load_chunk(
            options.collection,
            options.tenant,
            f"load-seed-{index // 10}",
            index,
            passage,
            vectors[index] if vectors else random_unit_vector(dims, rng),
            chunk_index=index % 10,
        )
        for index, passage in enumerate(passages)
    ]
    await indexer.upsert_chunks(options.collection, options.tenant, records, timeout=120)
    return len(records)


async def _embed(address: str, texts: list[str], *, query: bool) -> tuple[list[list[float]], str]:
    """Vectors from the embedding service, or ([], why not)."""
    try:
        async with EmbeddingClient(address, timeout=60) as embedding:
            reply = await embedding.embed_all(texts, input_type="query" if query else "document")
    except LoragError as error:
        return [], error.code.name
    return [list(e.values) for e in reply.embeddings], "ok"


async def query_vectors(
    options: LoadOptions, queries: list[str], address_of: Callable[[str], str]
) -> tuple[list[list[float]], str]:
    """Query vectors for indexer Search: embedded by the embedding service, else random unit vectors."""
    async with IndexerClient(address_of("indexer")) as indexer:
        described = await indexer.get_collection(options.collection, timeout=10)
    dims = described.vector_dimensions
    if options.mode != "keyword":
        vectors, why = await _embed(address_of("embedding"), queries, query=True)
        if vectors and len(vectors[0]) == dims:
            return vectors, f"query vectors: {len(vectors)} queries embedded by the embedding service"
        why = why if not vectors else f"{len(vectors[0])} dimensions, collection has {dims}"
    else:
        why = "keyword mode"
    rng = random.Random(options.seed)
    return [random_unit_vector(dims, rng) for _ in queries], f"query vectors: random unit vectors ({why})"
