"""Retrieval latency and throughput through the retrieval service, per mode, with the service's own stage timings.

    .venv/bin/python benchmarks/retrieval_bench.py [--docs 300] [--requests 400] [--rerank-requests 48]
        [--concurrency 8] [--warmup 8] [--top-k 10] [--env KEY=VALUE ...]

A private local stack (Weaviate + every installed service on free ports, stopped at the end) ingests the first
``--docs`` SciFact abstracts through the gateway (real parsing, chunking and embedding). Then SciFact queries, cycled
in order, are sent through ``RetrievalClient.retrieve`` with ``--concurrency`` in flight, ``--requests`` per mode:

- dense (vector search; the query is embedded by the embedding service), keyword (BM25), hybrid — no reranking;
- hybrid + rerank: the service's configured reranker (the default ``fusion`` reranker embeds the candidates'
  sentences through the embedding service, with an LRU sentence cache) over the default 50 candidates;
  ``--rerank-requests`` of them, as each costs far more on CPU. ``degraded`` counts responses where the reranker
  did not finish within ``LORAG_RETRIEVAL_RERANKER_TIMEOUT_SECONDS`` (10 s) and the search order came back instead.

Each mode starts with a warm-up of ``--warmup`` requests (not measured) and sees queries the earlier modes did not.
Figures per mode: client-side p50/p99/mean latency (an HDR histogram, µs resolution) and requests/s; and, from the
same responses, the mean of the service's stage timings (embed + search + rerank + mmr, ``RetrieveResponse.timing``)
and of its ``total_ns`` against the client-side mean, so the overhead outside the stages (the service's own work,
gRPC, the client) is visible: ``stage_share_of_client`` = mean stage sum ÷ mean client latency. No pass/fail target;
nothing asserted. ``--env`` passes extra environment to every lorag service (e.g. ``OMP_WAIT_POLICY=PASSIVE``,
``LORAG_RETRIEVAL_RERANKER=none``); it is recorded with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from _common import SCIFACT, report
from hdrh.histogram import HdrHistogram
from ingest_bench import (
    COLLECTION,
    TENANT,
    add_env_option,
    address,
    env_option,
    ingest_scifact,
    private_stack,
    scifact_docs,
    stop_service,
)

QUERIES = SCIFACT.parent / "queries.jsonl"
# label -> (search mode, rerank)
MODES: dict[str, tuple[str, bool]] = {
    "dense": ("vector", False),
    "keyword": ("keyword", False),
    "hybrid": ("hybrid", False),
    "hybrid_rerank": ("hybrid", True),
}


def scifact_queries() -> list[str]:
    with QUERIES.open() as handle:
        return [json.loads(line)["text"] for line in handle]


def _ms(value_us: float) -> float:
    return round(value_us / 1000, 2)


async def run_mode(
    retrieval: Any,
    queries: list[str],
    mode: str,
    rerank: bool,
    requests: int,
    concurrency: int,
    warmup: int,
    top_k: int,
    offset: int,
) -> dict[str, Any]:
    """``requests`` retrievals with ``concurrency`` in flight; client latencies and the service's timings."""
    options = retrieval.options(mode=mode, rerank=rerank, top_k=top_k)
    client_hist = HdrHistogram(1, 120_000_000, 3)  # µs, 1 µs .. 120 s
    stage_ns: list[int] = []
    server_ns: list[int] = []
    stage_parts = {"embed": 0, "search": 0, "rerank": 0, "mmr": 0}
    degraded = reranked = 0
    next_index = 0

    async def worker(count: int, measured: bool) -> None:
        nonlocal next_index, degraded, reranked
        while next_index < count:
            i = next_index
            next_index += 1
            query = queries[(offset + i) % len(queries)]
            started = time.perf_counter_ns()
            response = await retrieval.retrieve(query, tenant=TENANT, collection=COLLECTION, options=options)
            elapsed = time.perf_counter_ns() - started
            if not measured:
                continue
            t = response.timing
            client_hist.record_value(max(1, elapsed // 1000))
            stage_ns.append(t.embed_ns + t.search_ns + t.rerank_ns + t.mmr_ns)
            server_ns.append(t.total_ns)
            for part in stage_parts:
                stage_parts[part] += getattr(t, f"{part}_ns")
            degraded += response.degraded
            reranked += response.reranked

    await asyncio.gather(*(worker(warmup, False) for _ in range(concurrency)))
    next_index = 0
    offset += warmup
    started = time.perf_counter()
    await asyncio.gather(*(worker(requests, True) for _ in range(concurrency)))
    wall = time.perf_counter() - started

    client_mean_us = client_hist.get_mean_value()
    stage_mean_us = sum(stage_ns) / len(stage_ns) / 1000
    server_mean_us = sum(server_ns) / len(server_ns) / 1000
    return {
        "requests": requests,
        "requests_per_s": round(requests / wall, 1),
        "p50_ms": _ms(client_hist.get_value_at_percentile(50)),
        "p99_ms": _ms(client_hist.get_value_at_percentile(99)),
        "mean_ms": _ms(client_mean_us),
        "max_ms": _ms(client_hist.get_max_value()),
        "service_stage_sum_mean_ms": _ms(stage_mean_us),
        "service_stages_mean_ms": {part: _ms(ns / len(stage_ns) / 1000) for part, ns in stage_parts.items()},
        "service_total_mean_ms": _ms(server_mean_us),
        "overhead_outside_stages_mean_ms": _ms(client_mean_us - stage_mean_us),
        "stage_share_of_client": round(stage_mean_us / client_mean_us, 3),
        "reranked": reranked,
        "degraded": degraded,
    }


async def measure(retrieval_address: str, args: argparse.Namespace) -> dict[str, Any]:
    from lorag_client import RetrievalClient

    queries = scifact_queries()
    figures: dict[str, Any] = {}
    async with RetrievalClient(retrieval_address) as retrieval:
        offset = 0
        for label, (mode, rerank) in MODES.items():
            requests = args.rerank_requests if rerank else args.requests
            figures[label] = await run_mode(
                retrieval, queries, mode, rerank, requests, args.concurrency, args.warmup, args.top_k, offset
            )
            offset += args.warmup + requests  # Each mode sees fresh queries (for the reranker's sentence cache).
            print(f"# {label}: {json.dumps(figures[label])}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=300, help="SciFact documents ingested through the gateway")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per mode without reranking")
    parser.add_argument("--rerank-requests", type=int, default=48, help="measured requests with reranking")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--warmup", type=int, default=8, help="unmeasured requests before each mode")
    parser.add_argument("--top-k", type=int, default=10, help="chunks per response")
    add_env_option(parser)
    args = parser.parse_args()
    docs = scifact_docs(args.docs)
    extra_env = env_option(args.env)

    with private_stack(extra_env=extra_env) as stack:
        ingest_s, summary = asyncio.run(ingest_scifact(address(stack, "gateway"), docs))
        written, chunks = summary.written_count, summary.chunk_count
        print(f"# ingested {written} documents, {chunks} chunks in {ingest_s:.0f} s", flush=True)
        stop_service(stack, "gateway")  # Not on the retrieval path.
        modes = asyncio.run(measure(address(stack, "retrieval"), args))
    report(
        "retrieval",
        {
            "documents": len(docs),
            "extra_env": extra_env,
            "chunks": summary.chunk_count,
            "concurrency": args.concurrency,
            "top_k": args.top_k,
            "reranker": "service default (LORAG_RETRIEVAL_RERANKER, fusion unless set)",
            "modes": modes,
        },
    )


if __name__ == "__main__":
    main()
