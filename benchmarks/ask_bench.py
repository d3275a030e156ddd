"""The gateway's own overhead on Ask: end-to-end time minus the sum of its stage times.

    .venv/bin/python benchmarks/ask_bench.py [--docs 100] [--asks 50] [--max-new-tokens 16] [--env KEY=VALUE ...]

A private local stack (Weaviate + embedding, indexer, retrieval, generation, gateway, on free ports, stopped at the
end) ingests the first ``--docs`` SciFact abstracts; then ``--asks`` SciFact queries are asked one at a time through
``GatewayClient.ask`` (greedy, ``--max-new-tokens``), after ``--warmup`` unmeasured asks. From each response's
``AskTiming``: gateway overhead = ``total_ns - retrieve_ns - generate_ns`` (validation, model-info lookup, prompt
rendering and budgeting, citations, the gateway's own gRPC work), reported as p50/p90/max with the stage times and
the client-side latency for scale. No target; nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from _common import SCIFACT, report
from ingest_bench import (
    COLLECTION,
    TENANT,
    add_env_option,
    address,
    env_option,
    ingest_scifact,
    private_stack,
    scifact_docs,
)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(_percentile(values_ms, 0.5), 3),
        "p90": round(_percentile(values_ms, 0.9), 3),
        "max": round(max(values_ms), 3),
        "mean": round(statistics.fmean(values_ms), 3),
    }


async def measure(gateway_address: str, queries: list[str], warmup: int, max_new_tokens: int) -> dict[str, list[float]]:
    from lorag_client import GatewayClient

    figures: dict[str, list[float]] = {k: [] for k in ("overhead", "retrieve", "generate", "ttft", "total", "client")}
    async with GatewayClient(gateway_address, timeout=None) as gateway:
        for index, query in enumerate(queries):
            started = time.perf_counter_ns()
            answer = await gateway.ask(
                query, collection=COLLECTION, tenant=TENANT, top_k=3, temperature=0.0, max_new_tokens=max_new_tokens
            )
            client_ns = time.perf_counter_ns() - started
            if index < warmup:
                continue
            timing = answer.timing
            for key, ns in (
                ("overhead", timing.gateway_overhead_ns),
                ("retrieve", timing.retrieve_ns),
                ("generate", timing.generate_ns),
                ("ttft", timing.time_to_first_token_ns),
                ("total", timing.total_ns),
                ("client", client_ns),
            ):
                figures[key].append(ns / 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100, help="SciFact documents to ingest")
    parser.add_argument("--asks", type=int, default=50, help="measured asks")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured asks first")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    add_env_option(parser)
    args = parser.parse_args()
    extra_env = env_option(args.env)
    with (SCIFACT.parent / "queries.jsonl").open() as handle:
        queries = [json.loads(line)["text"] for line in handle][: args.asks + args.warmup]

    services = ("embedding", "indexer", "retrieval", "generation", "gateway")
    with private_stack(services, extra_env=extra_env) as stack:
        gateway = address(stack, "gateway")
        asyncio.run(ingest_scifact(gateway, scifact_docs(args.docs)))
        figures = asyncio.run(measure(gateway, queries, args.warmup, args.max_new_tokens))

    report(
        "ask",
        {
            "documents": args.docs,
            "asks": len(figures["total"]),
            "max_new_tokens": args.max_new_tokens,
            "extra_env": extra_env,
            "gateway_overhead_ms": _summary(figures["overhead"]),
            "overhead_share_of_total": round(sum(figures["overhead"]) / sum(figures["total"]), 4),
            **{f"{key}_ms": _summary(figures[key]) for key in ("retrieve", "generate", "ttft", "total", "client")},
        },
    )


if __name__ == "__main__":
    main()
