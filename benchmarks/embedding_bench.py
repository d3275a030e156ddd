"""Embedding service throughput against the in-process model, measured in one run on the same texts.

    .venv/bin/python benchmarks/embedding_bench.py [--texts 2000] [--callers 64] [--singles 512]

(a) bulk: service sentences/s (requests of 64 texts, 4 in flight) ÷ ``SentenceTransformer.encode(batch_size=32)``
    over the same texts. Target ≥ 0.95: the service adds little to the model.
(b) concurrent singles: 64 callers sending one text each through the service ÷ an in-process loop of single-text
    encodes. Target ≥ 3×: dynamic batching packs concurrent callers into shared forward passes. The report also
    gives the ceiling no server can pass on this hardware: the same texts encoded in-process in batches of 32
    (``concurrency_ceiling_ratio``), and how much of it the service reaches.
The service runs as its own process; the baselines run after it stops, so the two never share the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import corpus_texts, free_port, report, start_service, stop


async def _bulk(address: str, texts: list[str], request_size: int = 64, in_flight: int = 4) -> float:
    from lorag_client import EmbeddingClient

    async with EmbeddingClient(address) as client:
        await client.embed(texts[:8])  # warm the connection and the model
        gate = asyncio.Semaphore(in_flight)

        async def send(chunk: list[str]) -> None:
            async with gate:
                await client.embed(chunk)

        started = time.perf_counter()
        await asyncio.gather(*(send(texts[i : i + request_size]) for i in range(0, len(texts), request_size)))
        return len(texts) / (time.perf_counter() - started)


async def _singles(address: str, texts: list[str], callers: int) -> float:
    from lorag_client import EmbeddingClient

    async with EmbeddingClient(address) as client:
        await client.embed(texts[:8])
        queue = list(texts)

        async def caller() -> None:
            while queue:
                await client.embed([queue.pop()])

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        return len(texts) / (time.perf_counter() - started)


def _baselines(bulk_texts: list[str], single_texts: list[str]) -> tuple[float, float, float]:
    from sentence_transformers import SentenceTransformer

    from lorag_embedding.backends.local import default_model_path

    model = SentenceTransformer(str(default_model_path()), device="cpu")
    model.encode(bulk_texts[:8], batch_size=32, normalize_embeddings=True)
    started = time.perf_counter()
    model.encode(bulk_texts, batch_size=32, normalize_embeddings=True)
    bulk = len(bulk_texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    for text in single_texts:
        model.encode([text], normalize_embeddings=True)
    singles = len(single_texts) / (time.perf_counter() - started)
    # The hardware's ceiling for (b): the same short texts encoded in-process in batches of 32.
    started = time.perf_counter()
    model.encode(single_texts, batch_size=32, normalize_embeddings=True)
    ceiling = len(single_texts) / (time.perf_counter() - started)
    return bulk, singles, ceiling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000, help="texts for the bulk comparison")
    parser.add_argument("--singles", type=int, default=512, help="single-text requests for the concurrency comparison")
    parser.add_argument("--callers", type=int, default=64, help="concurrent single-text callers")
    args = parser.parse_args()
    texts = corpus_texts(args.texts)
    singles = [t[:300] for t in texts[: args.singles]]

    port = free_port()
    service = start_service("lorag_embedding", {"LORAG_EMBEDDING_PORT": str(port), "HF_HUB_OFFLINE": "1"})
    try:
        address = f"127.0.0.1:{port}"
        service_bulk = asyncio.run(_bulk(address, texts))
        service_singles = asyncio.run(_singles(address, singles, args.callers))
    finally:
        stop(service)
    baseline_bulk, baseline_singles, batched_singles = _baselines(texts, singles)
    report(
        "embedding",
        {
            "texts": len(texts),
            "service_bulk_texts_per_s": round(service_bulk, 1),
            "inprocess_encode_bs32_texts_per_s": round(baseline_bulk, 1),
            "bulk_ratio": round(service_bulk / baseline_bulk, 3),
            "bulk_target": 0.95,
            "callers": args.callers,
            "service_concurrent_singles_per_s": round(service_singles, 1),
            "inprocess_single_loop_per_s": round(baseline_singles, 1),
            "concurrency_ratio": round(service_singles / baseline_singles, 2),
            "concurrency_target": 3.0,
            "inprocess_batched_singles_per_s": round(batched_singles, 1),
            "concurrency_ceiling_ratio": round(batched_singles / baseline_singles, 2),
            "service_share_of_batched_ceiling": round(service_singles / batched_singles, 3),
        },
    )


if __name__ == "__main__":
    main()
