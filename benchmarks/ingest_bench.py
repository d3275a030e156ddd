"""End-to-end ingest throughput through the gateway on SciFact, with the share of time in each ingest stage.

    .venv/bin/python benchmarks/ingest_bench.py [--docs 1000] [--env KEY=VALUE ...]

A private local stack (Weaviate + every installed service, on free ports, in a throwaway state folder; stopped at
the end) ingests the first ``--docs`` SciFact abstracts (title + text) through ``GatewayClient.ingest`` as one
stream. Figures:

- documents/s and chunks/s of the first ingest (client wall time, from the first message to the summary);
- each stage's share of the summed stage time (prepare, collection, state, embed, index), from the gateway's
  ``lorag.gateway.ingest.stage.duration`` histogram scraped from its Prometheus port before and after. Stages of
  concurrent documents overlap, so the summed stage time exceeds the wall time; ``stage_overlap`` is their ratio;
- a second ingest of the same documents: every document UNCHANGED, nothing embedded or written; its wall time and
  its speed-up over the first ingest (the baseline, measured in the same run).

No pass/fail target: the figures show where ingest time goes (the embed share is expected to dominate on CPU).
``--env`` passes extra environment to every lorag service (e.g. ``OMP_WAIT_POLICY=PASSIVE``); it is recorded with
the figures.

The other knowledge-path benchmarks (indexer_bench.py, retrieval_bench.py) reuse ``private_stack`` and
``ingest_scifact`` from here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from _common import SCIFACT, report

from lorag_cli.stack import processes
from lorag_cli.stack.components import SERVICES
from lorag_cli.stack.manager import LocalStack
from lorag_cli.stack.private import private_env

STAGES = ("prepare", "collection", "state", "embed", "index")
STAGE_METRIC = "lorag_gateway_ingest_stage_duration_seconds"
COLLECTION = "SciFactBench"
TENANT = "bench"
STARTUP_TIMEOUT = 300.0  # Model loads overlap on a small CPU.


# -- a private stack ------------------------------------------------------------------------------------------------


def _sigterm(*_: object) -> None:
    raise SystemExit(143)  # Unwind through the finally blocks, so the stack is stopped.


@contextlib.contextmanager
def private_stack(
    services: Sequence[str] = ("embedding", "indexer", "retrieval", "gateway"),
    *,
    extra_env: dict[str, str] | None = None,
) -> Iterator[LocalStack]:
    """Weaviate and ``services`` started as real processes on free ports, healthy; all stopped on exit.

    Addresses: ``stack.service_env()`` (``LORAG_<SVC>_HOST``/``_PORT``/``_METRICS_PORT``, ``LORAG_WEAVIATE_*``).
    """
    signal.signal(signal.SIGTERM, _sigterm)
    with tempfile.TemporaryDirectory(prefix="lorag-bench-") as state:
        env = {**private_env(Path(state), services), **(extra_env or {})}
        stack = LocalStack(state=state, env=env, services=[s for s in SERVICES if s.name in services])
        missing = set(services) - {s.name for s in stack.services}
        if missing:
            raise SystemExit(f"services not installed: {', '.join(sorted(missing))}")
        started = time.perf_counter()
        try:
            stack.up(timeout=STARTUP_TIMEOUT)
            print(f"# stack up in {time.perf_counter() - started:.0f} s: weaviate + {', '.join(services)}", flush=True)
            yield stack
        finally:
            stack.down(grace=15)


def stop_service(stack: LocalStack, name: str) -> None:
    """Stop one component mid-run, so that its CPU goes to the rest."""
    record = processes.PidRecord.read(stack.pid_path(name))
    stack.stop(name)
    # Reap it through its Popen (which would otherwise warn at exit); its exit can take a moment to be reported.
    deadline = time.monotonic() + 5
    while record is not None and processes.returncode(record.pid) is None and time.monotonic() < deadline:
        time.sleep(0.1)


def add_env_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every lorag service of the stack (repeatable), e.g. OMP_WAIT_POLICY=PASSIVE or "
        "LORAG_RETRIEVAL_RERANKER=none; reported with the figures",
    )


def env_option(values: Sequence[str]) -> dict[str, str]:
    pairs = dict(value.split("=", 1) for value in values if "=" in value)
    if len(pairs) != len(values):
        raise SystemExit("--env takes KEY=VALUE")
    return pairs


def address(stack: LocalStack, service: str) -> str:
    return next(s.address for s in stack.services if s.name == service)


def metrics_port(stack: LocalStack, service: str) -> int:
    return next(s.metrics_port for s in stack.services if s.name == service)


# -- the corpus and ingest ------------------------------------------------------------------------------------------


def scifact_docs(limit: int, path: Path = SCIFACT) -> list[dict[str, str]]:
    """The first ``limit`` SciFact abstracts: {"_id", "title", "text"}."""
    docs = []
    with path.open() as handle:
        for line in handle:
            doc = json.loads(line)
            if doc["text"].strip():
                docs.append({"_id": doc["_id"], "title": doc["title"], "text": doc["text"]})
            if len(docs) == limit:
                break
    return docs


async def ingest_scifact(
    gateway_address: str, docs: Sequence[dict[str, str]], *, collection: str = COLLECTION, tenant: str = TENANT
) -> tuple[float, Any]:
    """Ingest ``docs`` through the gateway in one stream; (client wall seconds, IngestSummary). Fails loudly."""
    from lorag_client import GatewayClient, document

    messages = [
        document(tenant=tenant, collection=collection, id=d["_id"], title=d["title"], text=d["text"]) for d in docs
    ]
    failures: list[str] = []
    summary = None
    async with GatewayClient(gateway_address, timeout=None) as gateway:
        started = time.perf_counter()
        async for event in gateway.ingest(messages):
            if event.HasField("summary"):
                summary = event.summary
            elif event.result.error_code:
                failures.append(f"{event.result.document_id}: {event.result.error_code} {event.result.reason}")
        elapsed = time.perf_counter() - started
    if failures or summary is None:
        raise RuntimeError(f"ingest failed for {len(failures)} documents: {failures[:5]}")
    return elapsed, summary


# -- the gateway's stage histogram ----------------------------------------------------------------------------------


def scrape_stages(port: int) -> dict[str, tuple[float, float]]:
    """{stage: (summed seconds, count)} from the gateway's Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    totals: dict[str, list[float]] = {stage: [0.0, 0.0] for stage in STAGES}
    found = False
    for family in text_string_to_metric_families(text):
        if family.name != STAGE_METRIC:
            continue
        found = True
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if stage not in totals:
                continue
            if sample.name == STAGE_METRIC + "_sum":
                totals[stage][0] += sample.value
            elif sample.name == STAGE_METRIC + "_count":
                totals[stage][1] += sample.value
    if not found and "lorag_gateway_ingest" in text:
        names = sorted({line.split("{")[0] for line in text.splitlines() if "ingest" in line and "#" not in line})
        raise RuntimeError(f"{STAGE_METRIC} not exported; the gateway exports {names}")
    return {stage: (total[0], total[1]) for stage, total in totals.items()}


def stage_figures(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], wall: float) -> dict:
    seconds = {stage: after[stage][0] - before[stage][0] for stage in STAGES}
    counts = {stage: int(after[stage][1] - before[stage][1]) for stage in STAGES}
    total = sum(seconds.values())
    return {
        "stage_share": {stage: round(seconds[stage] / total, 4) if total else 0.0 for stage in STAGES},
        "stage_seconds": {stage: round(seconds[stage], 2) for stage in STAGES},
        "stage_documents": counts,
        "stage_overlap": round(total / wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="SciFact documents to ingest")
    add_env_option(parser)
    args = parser.parse_args()
    docs = scifact_docs(args.docs)
    extra_env = env_option(args.env)

    with private_stack(extra_env=extra_env) as stack:
        gateway, port = address(stack, "gateway"), metrics_port(stack, "gateway")
        before = scrape_stages(port)
        first_s, first = asyncio.run(ingest_scifact(gateway, docs))
        middle = scrape_stages(port)
        second_s, second = asyncio.run(ingest_scifact(gateway, docs))
        after = scrape_stages(port)

    if second.written_count or second.chunk_count or second.unchanged_count != len(docs):
        raise RuntimeError(f"the second ingest was not all UNCHANGED: {second}")
    report(
        "ingest",
        {
            "documents": len(docs),
            "extra_env": extra_env,
            "chunks": first.chunk_count,
            "embedded_tokens": first.usage.prompt_tokens,
            "first_ingest_s": round(first_s, 2),
            "documents_per_s": round(first.written_count / first_s, 2),
            "chunks_per_s": round(first.chunk_count / first_s, 2),
            "gateway_elapsed_s": round(first.elapsed_ns / 1e9, 2),
            **stage_figures(before, middle, first_s),
            "unchanged_ingest": {
                "seconds": round(second_s, 2),
                "documents_per_s": round(second.unchanged_count / second_s, 1),
                "unchanged": second.unchanged_count,
                "written": second.written_count,
                "speedup_vs_first": round(first_s / second_s, 1),
                **stage_figures(middle, after, second_s),
            },
        },
    )


if __name__ == "__main__":
    main()
