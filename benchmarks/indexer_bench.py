"""Indexer Search QPS through the service ÷ direct weaviate-client QPS, same queries on the same Weaviate collection.

    .venv/bin/python benchmarks/indexer_bench.py [--docs 2000] [--queries 300] [--requests 1600] [--concurrency 8]
        [--rounds 2] [--env KEY=VALUE ...]

A private stack (Weaviate + embedding + indexer on free ports, stopped at the end) holds ``--docs`` SciFact
abstracts, one chunk each (title, and the text cut at a word boundary near 1,000 characters, about the gateway's
default 200-token chunk), embedded by the embedding service and written with ``IndexerClient.upsert_chunks``.
``--queries`` SciFact queries are embedded once (vectors are cached under ~/.cache/lorag/bench, keyed by model and
texts); then the embedding service is stopped so that only Weaviate and the indexer share the CPU.

For each mode — vector (near_vector), keyword (bm25), hybrid — and limit 10, ``--requests`` searches with
``--concurrency`` in flight, in alternating rounds (direct, indexer, direct, indexer, ...):

(a) ``IndexerClient.search(...)`` over gRPC;
(b) the same queries with the async weaviate-client v4 against the same Weaviate collection and tenant, asking for
    what the indexer asks Weaviate for: the same properties (``CHUNK_PROPERTIES``), metadata (distance for vector,
    score otherwise), BM25 properties (text, title), alpha 0.5 with relative-score fusion, the same consistency
    level, and in hybrid mode the stored vectors (the indexer fetches them to compute each hit's distance).

Figures: QPS of both and their ratio per mode (target ≥ 0.85: the service costs little over calling Weaviate
directly), p50/p99 latency of each, and the share of queries whose top-10 ids agree (a fairness check). For hybrid,
also the direct QPS without fetching vectors (one round), which shows what that fetch costs.
On a 2-core machine the indexer path runs one more Python process (the indexer) on the same CPU as Weaviate and the
driver; that cost is part of what the ratio shows.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import SCIFACT, report
from hdrh.histogram import HdrHistogram
from ingest_bench import add_env_option, address, env_option, private_stack, scifact_docs, stop_service

from lorag_client.indexer import Mode

QUERIES = SCIFACT.parent / "queries.jsonl"
CACHE = Path.home() / ".cache" / "lorag" / "bench"
COLLECTION = "IndexerBench"
TENANT = "bench"
MODES: tuple[Mode, ...] = ("vector", "keyword", "hybrid")
LIMIT = 10
CHUNK_CHARS = 1000
WARMUP = 50


def chunk_text(text: str, limit: int = CHUNK_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def scifact_queries(limit: int) -> list[str]:
    with QUERIES.open() as handle:
        return [json.loads(line)["text"] for line in handle][:limit]


# -- vectors --------------------------------------------------------------------------------------------------------


async def _embed_all(
    client: Any, texts: Sequence[str], input_type: str, size: int = 32, in_flight: int = 4
) -> np.ndarray:
    gate = asyncio.Semaphore(in_flight)

    async def part(chunk: Sequence[str]) -> list[list[float]]:
        async with gate:
            return await client.embed_vectors(chunk, input_type=input_type)

    parts = await asyncio.gather(*(part(texts[i : i + size]) for i in range(0, len(texts), size)))
    return np.asarray([vector for p in parts for vector in p], dtype=np.float32)


async def embed_cached(
    embedding_address: str, docs: Sequence[str], queries: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, str]:
    """Document and query vectors from the embedding service, cached by model and texts."""
    from lorag_client import EmbeddingClient

    async with EmbeddingClient(embedding_address, timeout=None) as client:
        info = await client.info()
        key = hashlib.sha256("\x00".join([info.model, str(info.dimensions), *docs, "\x01", *queries]).encode())
        path = CACHE / f"indexer_bench_{key.hexdigest()[:16]}.npz"
        if path.is_file():
            cached = np.load(path)
            print(f"# vectors from {path}", flush=True)
            return cached["docs"], cached["queries"], info.model
        started = time.perf_counter()
        doc_vectors = await _embed_all(client, docs, "document")
        query_vectors = await _embed_all(client, queries, "query")
        seconds = time.perf_counter() - started
        print(f"# embedded {len(docs)} chunks + {len(queries)} queries in {seconds:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, docs=doc_vectors, queries=query_vectors)
    return doc_vectors, query_vectors, info.model


# -- load -----------------------------------------------------------------------------------------------------------


async def load(
    indexer_address: str, docs: list[dict[str, str]], texts: list[str], vectors: np.ndarray, model: str
) -> str:
    """Create the collection and write one chunk per document; returns the Weaviate collection name."""
    from lorag_client import IndexerClient
    from lorag_client.indexer import chunk_record

    async with IndexerClient(indexer_address, timeout=None) as indexer:
        collection = await indexer.create_collection(COLLECTION, dimensions=vectors.shape[1], embedding_model=model)
        records = [
            chunk_record(
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"scifact/{doc['_id']}/0")),
                doc["_id"],
                text,
                vector.tolist(),
                token_count=len(text.split()),
                title=doc["title"],
                source_uri=f"scifact/{doc['_id']}",
                content_sha256=hashlib.sha256(text.encode()).hexdigest(),
            )
            for doc, text, vector in zip(docs, texts, vectors, strict=True)
        ]
        started = time.perf_counter()
        for i in range(0, len(records), 500):
            await indexer.upsert_chunks(COLLECTION, TENANT, records[i : i + 500])
        print(f"# wrote {len(records)} chunks in {time.perf_counter() - started:.1f} s", flush=True)
        return str(collection.name)


# -- measuring ------------------------------------------------------------------------------------------------------


async def drive(
    call: Callable[[int], Awaitable[Any]], count: int, concurrency: int, hist: HdrHistogram, offset: int = 0
) -> float:
    """``count`` calls of ``call(i)`` with ``concurrency`` in flight; latencies (µs) into ``hist``; returns seconds."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            started = time.perf_counter_ns()
            await call(offset + i)
            hist.record_value(max(1, (time.perf_counter_ns() - started) // 1000))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, 60_000_000, 3)  # 1 µs .. 60 s, 3 significant digits


async def measure(
    indexer_address: str,
    weaviate_http: int,
    weaviate_grpc: int,
    weaviate_collection: str,
    queries: list[str],
    vectors: np.ndarray,
    requests: int,
    concurrency: int,
    rounds: int,
) -> dict[str, Any]:
    import weaviate
    from weaviate.classes.config import ConsistencyLevel
    from weaviate.classes.query import HybridFusion, MetadataQuery

    from lorag_client import IndexerClient
    from lorag_indexer.backends.weaviate.schema import CHUNK_PROPERTIES
    from lorag_indexer.config import IndexerSettings

    query_vectors = [v.tolist() for v in vectors]
    n = len(queries)
    consistency = ConsistencyLevel(IndexerSettings().consistency_level)
    client = weaviate.use_async_with_local(
        host="127.0.0.1", port=weaviate_http, grpc_port=weaviate_grpc, skip_init_checks=True
    )
    await client.connect()
    figures: dict[str, Any] = {}
    try:
        view = client.collections.get(weaviate_collection).with_tenant(TENANT).with_consistency_level(consistency)
        async with IndexerClient(indexer_address) as indexer:

            def direct_call(mode: Mode, vectors: bool | None = None) -> Callable[[int], Awaitable[Any]]:
                common: dict[str, Any] = {
                    "limit": LIMIT,
                    "return_properties": CHUNK_PROPERTIES,
                    "return_metadata": MetadataQuery(distance=mode == "vector", score=mode != "vector"),
                    "include_vector": mode == "hybrid" if vectors is None else vectors,
                }

                async def call(i: int) -> Any:
                    q = i % n
                    if mode == "vector":
                        return await view.query.near_vector(near_vector=query_vectors[q], **common)
                    if mode == "keyword":
                        return await view.query.bm25(query=queries[q], query_properties=["text", "title"], **common)
                    return await view.query.hybrid(
                        query=queries[q],
                        vector=query_vectors[q],
                        alpha=0.5,
                        fusion_type=HybridFusion.RELATIVE_SCORE,
                        query_properties=["text", "title"],
                        **common,
                    )

                return call

            def service_call(mode: Mode) -> Callable[[int], Awaitable[Any]]:
                async def call(i: int) -> Any:
                    q = i % n
                    return await indexer.search(
                        COLLECTION,
                        TENANT,
                        text="" if mode == "vector" else queries[q],
                        vector=None if mode == "keyword" else query_vectors[q],
                        mode=mode,
                        limit=LIMIT,
                    )

                return call

            for mode in MODES:
                direct, service = direct_call(mode), service_call(mode)
                # Same answers? The top-10 ids of both paths, per query (a check that the comparison is fair).
                agree = 0
                checked = min(n, 100)
                for q in range(checked):
                    mine = [h.chunk.chunk_id for h in (await service(q)).hits]
                    theirs = [str(o.uuid) for o in (await direct(q)).objects]
                    agree += mine == theirs
                await drive(direct, WARMUP, concurrency, _histogram())
                await drive(service, WARMUP, concurrency, _histogram())
                hists = {"direct": _histogram(), "indexer": _histogram()}
                seconds = {"direct": 0.0, "indexer": 0.0}
                per_round = requests // rounds
                for r in range(rounds):
                    seconds["direct"] += await drive(direct, per_round, concurrency, hists["direct"], r * per_round)
                    seconds["indexer"] += await drive(service, per_round, concurrency, hists["indexer"], r * per_round)
                qps = {side: per_round * rounds / seconds[side] for side in seconds}
                figures[mode] = {
                    "indexer_qps": round(qps["indexer"], 1),
                    "direct_qps": round(qps["direct"], 1),
                    "ratio": round(qps["indexer"] / qps["direct"], 3),
                    **{
                        f"{side}_{p}_ms": round(hists[side].get_value_at_percentile(pct) / 1000, 2)
                        for side in ("indexer", "direct")
                        for p, pct in (("p50", 50), ("p99", 99))
                    },
                    "same_top10": round(agree / checked, 3),
                }
                if mode == "hybrid":  # What fetching the stored vectors (for each hit's distance) costs Weaviate.
                    plain = _histogram()
                    plain_s = await drive(direct_call(mode, vectors=False), per_round, concurrency, plain)
                    figures[mode]["direct_without_vectors_qps"] = round(per_round / plain_s, 1)
                    figures[mode]["direct_without_vectors_p50_ms"] = round(plain.get_value_at_percentile(50) / 1000, 2)
                print(f"# {mode}: {json.dumps(figures[mode])}", flush=True)
    finally:
        await client.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000, help="SciFact documents (one chunk each)")
    parser.add_argument("--queries", type=int, default=300, help="SciFact queries, cycled through")
    parser.add_argument("--requests", type=int, default=1600, help="searches per mode and per side")
    parser.add_argument("--concurrency", type=int, default=8, help="searches in flight")
    parser.add_argument("--rounds", type=int, default=2, help="alternating direct/indexer rounds per mode")
    add_env_option(parser)
    args = parser.parse_args()
    extra_env = env_option(args.env)
    docs = scifact_docs(args.docs)
    texts = [chunk_text(d["text"]) for d in docs]
    queries = scifact_queries(args.queries)

    with private_stack(("embedding", "indexer"), extra_env=extra_env) as stack:
        doc_vectors, query_vectors, model = asyncio.run(embed_cached(address(stack, "embedding"), texts, queries))
        stop_service(stack, "embedding")  # Leave the CPU to Weaviate, the indexer and the driver.
        indexer = address(stack, "indexer")
        weaviate_collection = asyncio.run(load(indexer, docs, texts, doc_vectors, model))
        modes = asyncio.run(
            measure(
                indexer,
                stack.weaviate.http_port,
                stack.weaviate.grpc_port,
                weaviate_collection,
                queries,
                query_vectors,
                args.requests,
                args.concurrency,
                args.rounds,
            )
        )
    report(
        "indexer",
        {
            "chunks": len(docs),
            "extra_env": extra_env,
            "queries": len(queries),
            "requests_per_mode": args.requests // args.rounds * args.rounds,
            "concurrency": args.concurrency,
            "limit": LIMIT,
            "modes": modes,
            "target_ratio": 0.85,
        },
    )


if __name__ == "__main__":
    main()
