"""Every service exposes RED metrics per RPC, and its domain metrics, for Prometheus.

The in-process ``lorag_services`` fixture cannot be scraped: its services share one process-wide MeterProvider,
created without a Prometheus reader (no metrics port). So this module uses the session's ``process_stack`` (the
stack as deployed: each service its own process with its own metrics port), scrapes every port, makes a few calls,
one of them failing on purpose per service, scrapes again, and checks what the calls added: other modules share
the stack, so figures are differences, never totals.
"""

from __future__ import annotations

import uuid
from itertools import pairwise

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lorag.embedding.v1 import embedding_service_pb2 as embedding_pb
from lorag.embedding.v1 import embedding_service_pb2_grpc as embedding_grpc
from lorag.indexer.v1 import indexer_service_pb2 as indexer_pb
from lorag.indexer.v1 import indexer_service_pb2_grpc as indexer_grpc
from lorag_cli.stack.manager import LocalStack
from lorag_client import GatewayClient, GenerationClient, TrainingClient, document
from lorag_core.errors import InvalidArgument, NotFound

pytestmark = pytest.mark.e2e

COLLECTION = f"Metrics{uuid.uuid4().hex[:8]}"
TENANT = "acme"

REQUESTS = "lorag_rpc_server_requests_total"
DURATION = "lorag_rpc_server_duration_seconds"
EMBED = "/lorag.embedding.v1.EmbeddingService/Embed"
SEARCH = "/lorag.indexer.v1.IndexerService/Search"
RETRIEVAL_RETRIEVE = "/lorag.retrieval.v1.RetrievalService/Retrieve"
GATEWAY_RETRIEVE = "/lorag.gateway.v1.GatewayService/Retrieve"
INGEST = "/lorag.gateway.v1.GatewayService/IngestDocuments"


@pytest.fixture(scope="module")
def stack(process_stack) -> LocalStack:
    return process_stack[1]


def _service(stack: LocalStack, name: str):
    return next(s for s in stack.services if s.name == name)


@pytest.fixture(scope="module")
async def traffic(stack: LocalStack) -> dict:
    """A few calls through the gateway plus one failing call per service; returns the figures they should leave
    and what each service's metrics were before them."""
    before = {svc.name: _scrape(stack, svc.name) for svc in stack.services}
    async with GatewayClient(_service(stack, "gateway").address) as gateway:
        docs = [
            document(tenant=TENANT, collection=COLLECTION, id="a", text="Paris is the capital of France."),
            document(tenant=TENANT, collection=COLLECTION, id="b", text="The Eiffel Tower was finished in 1889."),
        ]
        summary = None
        async for event in gateway.ingest(docs):
            if event.HasField("summary"):
                summary = event.summary
        assert summary is not None and summary.written_count == 2
        found = await gateway.retrieve("When was the Eiffel Tower finished?", collection=COLLECTION, tenant=TENANT)
        assert found.chunks
        with pytest.raises(InvalidArgument):  # fails in retrieval, passed on by the gateway
            await gateway.retrieve("", collection=COLLECTION, tenant=TENANT)
    async with grpc.aio.insecure_channel(_service(stack, "embedding").address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as no_texts:
            await embedding_grpc.EmbeddingServiceStub(channel).Embed(embedding_pb.EmbedRequest())
        assert no_texts.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    async with grpc.aio.insecure_channel(_service(stack, "indexer").address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await indexer_grpc.IndexerServiceStub(channel).Search(
                indexer_pb.SearchRequest(collection="NoSuchCollection", tenant=TENANT, query_text="x")
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    async with GenerationClient(_service(stack, "generation").address, timeout=300) as generation:
        reply = await generation.generate("The capital of France is", temperature=0, max_new_tokens=4)
        with pytest.raises(NotFound):
            await generation.generate("Hi", adapter="no-such-adapter", max_new_tokens=4)
    async with TrainingClient(_service(stack, "training").address) as training:
        await training.list_jobs()
        with pytest.raises(NotFound):
            await training.get_job("job-does-not-exist")
    return {
        "chunks": summary.chunk_count,
        "ingest_tokens": summary.usage.prompt_tokens,
        "generated_tokens": reply.usage.completion_tokens,
        "before": before,
    }


def _scrape(stack: LocalStack, name: str) -> dict[str, list]:
    """{sample name: [(labels, value), ...]} from the service's Prometheus endpoint."""
    text = httpx.get(f"http://127.0.0.1:{_service(stack, name).metrics_port}/metrics", timeout=5).text
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _value(samples: dict[str, list], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


def _added(stack: LocalStack, name: str, traffic: dict) -> dict[str, list]:
    """What the module's traffic added to service `name`'s counters and histograms (gauges: their value now)."""
    after, before = _scrape(stack, name), traffic["before"][name]
    added: dict[str, list] = {}
    for sample, values in after.items():
        earlier = {tuple(sorted(lab.items())): v for lab, v in before.get(sample, [])}
        cumulative = sample.endswith(("_total", "_count", "_sum", "_bucket"))
        added[sample] = [
            (lab, v - earlier.get(tuple(sorted(lab.items())), 0.0) if cumulative else v) for lab, v in values
        ]
    return added


def _assert_red(samples: dict[str, list], method: str, code: str, count: int | None = None) -> None:
    """A request count by code, and a duration histogram for the same calls whose buckets add up to it."""
    labels = {"rpc_method": method, "rpc_grpc_status_code": code}
    calls = _value(samples, REQUESTS, **labels)
    if count is None:
        assert calls >= 1, f"no {code} call of {method} counted"
    else:
        assert calls == count, f"{method} {code}: {calls} counted, {count} made"
    assert _value(samples, DURATION + "_count", **labels) == calls
    assert _value(samples, DURATION + "_sum", **labels) > 0
    buckets = sorted(
        ((float(lab["le"]), v) for lab, v in samples[DURATION + "_bucket"] if labels.items() <= lab.items()),
    )
    assert len(buckets) > 2 and buckets[-1] == (float("inf"), calls)
    assert all(a[1] <= b[1] for a, b in pairwise(buckets))  # cumulative


async def test_gateway_counts_each_rpc_by_status_code(stack, traffic):
    samples = _added(stack, "gateway", traffic)
    _assert_red(samples, INGEST, "OK", 1)
    _assert_red(samples, GATEWAY_RETRIEVE, "OK", 1)
    _assert_red(samples, GATEWAY_RETRIEVE, "INVALID_ARGUMENT", 1)
    assert _value(samples, REQUESTS, rpc_method="/grpc.health.v1.Health/Check") == 0  # probes are not traffic


async def test_retrieval_counts_each_rpc_by_status_code(stack, traffic):
    samples = _added(stack, "retrieval", traffic)
    _assert_red(samples, RETRIEVAL_RETRIEVE, "OK", 1)
    _assert_red(samples, RETRIEVAL_RETRIEVE, "INVALID_ARGUMENT", 1)


async def test_indexer_counts_each_rpc_by_status_code(stack, traffic):
    samples = _added(stack, "indexer", traffic)
    _assert_red(samples, SEARCH, "OK", 1)
    _assert_red(samples, SEARCH, "NOT_FOUND", 1)
    _assert_red(samples, "/lorag.indexer.v1.IndexerService/UpsertChunks", "OK")
    assert _value(samples, "lorag_indexer_chunks_written_total") == traffic["chunks"]
    assert _value(samples, "lorag_indexer_weaviate_up") == 1


async def test_generation_counts_rpcs_and_reports_tokens_and_adapters(stack, traffic):
    samples = _added(stack, "generation", traffic)
    _assert_red(samples, "/lorag.generation.v1.GenerationService/Generate", "OK", 1)
    _assert_red(samples, "/lorag.generation.v1.GenerationService/Generate", "NOT_FOUND", 1)
    assert _value(samples, "lorag_generation_tokens_total") == traffic["generated_tokens"] == 4
    assert _value(samples, "lorag_generation_tokens_per_second_count") == 1
    assert _value(samples, "lorag_generation_batch_size_count") >= 3  # prefill gives token 1, then a step per token
    assert "lorag_generation_adapters_active" in samples and "lorag_generation_queue_depth" in samples
    assert _value(samples, "lorag_generation_queue_depth") == 0


async def test_training_counts_rpcs_and_reports_jobs(stack, traffic):
    samples = _added(stack, "training", traffic)
    _assert_red(samples, "/lorag.training.v1.TrainingService/ListTrainingJobs", "OK", 1)
    _assert_red(samples, "/lorag.training.v1.TrainingService/GetTrainingJob", "NOT_FOUND", 1)
    assert "lorag_training_jobs_running" in samples


async def test_embedding_counts_rpcs_and_reports_its_batches_and_queue(stack, traffic):
    samples = _added(stack, "embedding", traffic)
    _assert_red(samples, EMBED, "OK")
    _assert_red(samples, EMBED, "INVALID_ARGUMENT", 1)
    batches = _value(samples, "lorag_embedding_batch_size_count")
    assert batches >= 2  # at least the ingest's chunks and the query, in batches of their own
    # Every text embedded went through one batch: the ingest's chunks and the query at least.
    assert _value(samples, "lorag_embedding_batch_size_sum") >= traffic["chunks"] + 1
    assert _value(samples, "lorag_embedding_batch_tokens_sum") >= traffic["ingest_tokens"]
    assert _value(samples, "lorag_embedding_batch_duration_seconds_count") == batches
    assert "lorag_embedding_queue_depth" in samples
    assert _value(samples, "lorag_embedding_queue_depth") == 0  # nothing waits once every call has returned
