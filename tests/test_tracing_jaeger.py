"""One request is one trace, in a real Jaeger: the stack runs as separate processes exporting OTLP to it.

A Jaeger all-in-one (in memory, free ports) and a private local stack (Weaviate + every installed service, free
ports, its own state folder) start once for the session (`process_stack` in conftest.py). Each test makes one
request through the gateway, finds its trace through Jaeger's query API, and checks what an operator reads there:
which service called which (span parent links across processes, plus the indexer's client spans to Weaviate), the
attributes that say what was asked (tenant, collection, k, model, tokens), that no attribute carries document or
question text, and that the services' JSON logs carry the same trace id.

Skipped only when the Jaeger binary is absent: it is built by `make setup` (scripts/setup.sh), as CI does, and
never downloaded at test time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag_cli.stack.manager import LocalStack
from lorag_client import GatewayClient, TrainingClient, document, retrieval_options
from lorag_core.errors import LoragError
from lorag_testing.jaeger import JaegerServer, Trace

pytestmark = pytest.mark.e2e

COLLECTION = f"Trace{uuid.uuid4().hex[:8]}"
TENANT = "acme"
# Distinctive words: if any of them shows up in a span attribute or event, text leaked into the trace.
SECRET_WORDS = ("quokka", "rottnest", "marsupial", "wallaby")
DOCS = {
    "quokkas": "The quokka is a small marsupial. About twelve thousand quokkas live on Rottnest Island near Perth.",
    "wallabies": "A wallaby is a marsupial smaller than a kangaroo. Rock wallabies live on cliffs and boulders.",
    "islands": "Rottnest Island lies eighteen kilometres off the coast of Western Australia.",
}
QUESTION = "How many quokkas live on Rottnest Island?"

GATEWAY, RETRIEVAL, EMBEDDING, INDEXER, GENERATION, TRAINING = (
    f"lorag-{name}" for name in ("gateway", "retrieval", "embedding", "indexer", "generation", "training")
)
INGEST_OP = "/lorag.gateway.v1.GatewayService/IngestDocuments"
RETRIEVE_OP = "/lorag.gateway.v1.GatewayService/Retrieve"
ASK_OP = "/lorag.gateway.v1.GatewayService/Ask"
EMBED_OP = "/lorag.embedding.v1.EmbeddingService/Embed"


@pytest.fixture(scope="module")
def traced_stack(process_stack):
    """The session's process stack (conftest.py): Jaeger plus every service as its own process."""
    return process_stack


def _address(stack: LocalStack, name: str) -> str:
    return next(s.address for s in stack.services if s.name == name)


def _has(stack: LocalStack, name: str) -> bool:
    return any(s.name == name for s in stack.services)


@pytest.fixture(scope="module")
async def gateway(traced_stack):
    _, stack = traced_stack
    async with GatewayClient(_address(stack, "gateway")) as client:
        yield client


@pytest.fixture(scope="module")
async def ingested(gateway) -> pb.IngestSummary:
    docs = [document(tenant=TENANT, collection=COLLECTION, id=key, text=text) for key, text in DOCS.items()]
    summary = None
    async for event in gateway.ingest(docs):
        if event.HasField("summary"):
            summary = event.summary
    assert summary is not None and summary.written_count == len(DOCS)
    return summary


async def _only_trace(jaeger: JaegerServer, operation: str, services: set[str], timeout: float = 30.0) -> Trace:
    """The one trace of this module's collection whose gateway span is `operation`, once spans of every one of
    `services` arrived (other modules share the stack, so traces of other collections are left out)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await asyncio.to_thread(jaeger.query.get_traces, GATEWAY, operation=operation)
        found = [t for t in found if any(value == COLLECTION for _, _, value in t.attribute_values())]
        if len(found) == 1 and services <= found[0].services:
            return await asyncio.to_thread(jaeger.query.get_trace, found[0].trace_id) or found[0]
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"expected one {operation} trace with {sorted(services)}; Jaeger has "
                f"{[(t.trace_id, sorted(t.services)) for t in found]}"
            )
        await asyncio.sleep(0.25)


def _assert_one_tree_rooted_at_gateway(trace: Trace, operation: str) -> None:
    """Every span hangs from the gateway's server span: nothing started a trace of its own, no link is broken."""
    assert len(trace.trace_ids) == 1
    roots = trace.roots()
    assert [(r.service, r.operation, r.kind) for r in roots] == [(GATEWAY, operation, "server")]


def _assert_no_text(trace: Trace, *texts: str) -> None:
    """No attribute or event value carries any of `texts`, nor any of the distinctive words they contain."""
    texts = tuple(t for t in texts if len(t) >= 8)  # a very short answer could match by chance
    for span, key, value in trace.attribute_values():
        low = str(value).lower()
        for text in texts:
            assert text.lower() not in low, f"{span.service} {span.operation}: {key} carries request text"
        for word in SECRET_WORDS:
            assert word not in low, f"{span.service} {span.operation}: {key}={value!r} carries {word!r}"


def _weaviate_calls(trace: Trace) -> list:
    return [s for s in trace.spans if s.service == INDEXER and s.kind == "client" and s.tags.get("peer.service")]


def _log_lines(stack: LocalStack, service: str, trace_id: str) -> list[dict]:
    lines = []
    for raw in stack.log_path(service).read_text(errors="replace").splitlines():
        if trace_id in raw:
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return [line for line in lines if line.get("trace_id") == trace_id]


# -- ingest -------------------------------------------------------------------------------------------------------


async def test_ingest_is_one_trace_from_the_gateway_to_embedding_and_indexer(traced_stack, ingested):
    jaeger, _ = traced_stack
    trace = await _only_trace(jaeger, INGEST_OP, {GATEWAY, EMBEDDING, INDEXER})
    _assert_one_tree_rooted_at_gateway(trace, INGEST_OP)
    assert {(GATEWAY, EMBEDDING), (GATEWAY, INDEXER), (INDEXER, "weaviate")} <= trace.edges()
    assert RETRIEVAL not in trace.services  # ingest never retrieves
    writes = [s for s in _weaviate_calls(trace) if s.tags["db.operation.name"] == "insert_many"]
    assert writes, sorted({s.operation for s in _weaviate_calls(trace)})
    assert all(w.tags["db.collection.name"] == COLLECTION and w.tags["lorag.tenant"] == TENANT for w in writes)
    embeds = [s for s in trace.spans if s.service == EMBEDDING and s.operation == EMBED_OP and s.kind == "server"]
    assert embeds and sum(int(s.tags["lorag.embedding.tokens"]) for s in embeds) == ingested.usage.prompt_tokens
    _assert_no_text(trace, *DOCS.values())


# -- retrieve -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def retrieved(traced_stack, gateway, ingested):
    found = await gateway.retrieve(QUESTION, collection=COLLECTION, tenant=TENANT, top_k=2, mode="hybrid")
    assert found.chunks[0].chunk.document_id == "quokkas"
    jaeger, _ = traced_stack
    return found, await _only_trace(jaeger, RETRIEVE_OP, {GATEWAY, RETRIEVAL, EMBEDDING, INDEXER})


async def test_retrieve_is_one_trace_across_every_service_down_to_weaviate(retrieved):
    _, trace = retrieved
    _assert_one_tree_rooted_at_gateway(trace, RETRIEVE_OP)
    edges = trace.edges()
    assert {(GATEWAY, RETRIEVAL), (RETRIEVAL, EMBEDDING), (RETRIEVAL, INDEXER), (INDEXER, "weaviate")} <= edges
    assert (GATEWAY, INDEXER) not in edges and (GATEWAY, EMBEDDING) not in edges  # retrieval owns those calls
    # The hop to Weaviate: a client span per call, under the indexer's search step, naming where Weaviate is.
    (call,) = _weaviate_calls(trace)
    assert call.operation == "weaviate hybrid"
    assert call.tags["db.system.name"] == "weaviate" and call.tags["network.protocol.name"] == "grpc"
    assert call.tags["server.address"] == "127.0.0.1" and int(call.tags["server.port"]) > 0
    assert trace.span(call.parent_id).operation == "weaviate.search"


async def test_retrieve_spans_say_what_was_asked_without_the_text(retrieved):
    found, trace = retrieved
    stages = {s.operation: s for s in trace.spans if s.service == RETRIEVAL and s.operation.startswith("retrieval.")}
    assert {"retrieval.embed", "retrieval.search"} <= set(stages)
    for span in stages.values():
        assert span.tags["lorag.tenant"] == TENANT and span.tags["lorag.collection"] == COLLECTION
        assert span.tags["lorag.retrieval.mode"] == "hybrid"
    assert int(stages["retrieval.search"].tags["lorag.retrieval.k"]) >= 2  # candidates fetched for top_k=2
    embeds = [s for s in trace.spans if s.service == EMBEDDING and s.operation == EMBED_OP and s.kind == "server"]
    # The query's own embedding, below the embed stage (the fusion reranker embeds the candidates' sentences too).
    (embed,) = [s for s in embeds if "retrieval.embed" in {a.operation for a in trace.ancestors(s)}]
    assert embed.tags["lorag.embedding.model"] == found.embedding_model
    assert int(embed.tags["lorag.embedding.texts"]) == 1 and int(embed.tags["lorag.embedding.tokens"]) > 0
    (search,) = [s for s in trace.spans if s.operation == "weaviate.search"]
    assert search.tags["lorag.indexer.collection"] == COLLECTION and search.tags["lorag.indexer.tenant"] == TENANT
    assert int(search.tags["lorag.indexer.hits"]) >= 2
    _assert_no_text(trace, QUESTION, *DOCS.values())


async def test_the_logs_of_a_request_carry_its_trace_id(traced_stack, retrieved):
    _, stack = traced_stack
    _, trace = retrieved
    deadline = time.monotonic() + 10
    while True:
        lines = {name: _log_lines(stack, name, trace.trace_id) for name in ("gateway", "retrieval", "indexer")}
        if all(lines.values()) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.2)
    for name, found in lines.items():
        methods = {line.get("method") for line in found if line.get("event") == "rpc"}
        assert methods, f"no access-log line of {name} carries trace {trace.trace_id}"
    assert {line["method"] for line in lines["gateway"] if line.get("event") == "rpc"} == {RETRIEVE_OP}
    assert "/lorag.retrieval.v1.RetrievalService/Retrieve" in {line.get("method") for line in lines["retrieval"]}
    # Each line's span id is a span of this trace, so a log line leads to its exact place in the trace.
    span_ids = {s.span_id for s in trace.spans}
    assert all(line["span_id"] in span_ids for found in lines.values() for line in found)


# -- ask ----------------------------------------------------------------------------------------------------------


async def test_ask_is_one_trace_through_retrieval_and_generation(traced_stack, gateway, ingested):
    jaeger, stack = traced_stack
    assert _has(stack, "generation"), "the generation service is not installed (no lorag_generation.__main__)"
    request = pb.AskRequest(
        question=QUESTION, tenant=TENANT, collection=COLLECTION, retrieval=retrieval_options(top_k=2)
    )
    request.sampling.max_new_tokens = 16
    try:
        answer = await gateway.invoke("Ask", request, timeout=120)
    except LoragError as exc:
        raise AssertionError(f"Ask failed: {exc.code.name} {exc.message}") from exc
    assert answer.citations and answer.usage.completion_tokens > 0
    trace = await _only_trace(jaeger, ASK_OP, {GATEWAY, RETRIEVAL, EMBEDDING, INDEXER, GENERATION}, timeout=60)
    _assert_one_tree_rooted_at_gateway(trace, ASK_OP)
    assert {
        (GATEWAY, RETRIEVAL),
        (RETRIEVAL, EMBEDDING),
        (RETRIEVAL, INDEXER),
        (INDEXER, "weaviate"),
        (GATEWAY, GENERATION),
    } <= trace.edges()
    # What a person needs to tell one Ask from another: on the gateway's ask step ...
    (ask,) = [s for s in trace.spans if s.service == GATEWAY and s.operation == "ask"]
    assert (ask.tags["lorag.tenant"], ask.tags["lorag.collection"], int(ask.tags["lorag.top_k"])) == (
        TENANT,
        COLLECTION,
        2,
    )
    assert ask.tags["lorag.adapter"] == "" and ask.tags["lorag.model"] == answer.model  # base model, no adapter
    assert int(ask.tags["lorag.prompt_tokens"]) == answer.usage.prompt_tokens
    assert int(ask.tags["lorag.completion_tokens"]) == answer.usage.completion_tokens
    # ... and on the generation step, where the tokens were spent.
    (generate,) = [s for s in trace.spans if s.service == GENERATION and s.operation == "lorag.generation.generate"]
    assert generate.tags["lorag.generation.model"] == answer.model
    assert int(generate.tags["lorag.generation.prompt_tokens"]) == answer.usage.prompt_tokens
    assert int(generate.tags["lorag.generation.completion_tokens"]) == answer.usage.completion_tokens
    assert GATEWAY in {a.service for a in trace.ancestors(generate)}
    _assert_no_text(trace, QUESTION, *DOCS.values(), answer.answer)


# -- training -----------------------------------------------------------------------------------------------------


async def test_a_training_job_names_the_trace_of_its_creation(traced_stack):
    """TrainingJob.trace_id leads to the trace in Jaeger (the job is cancelled at once: training is not the point)."""
    jaeger, stack = traced_stack
    assert _has(stack, "training"), "the training service is not installed (no lorag_training.__main__)"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {n} plus one?"},
                {"role": "assistant", "content": str(n + 1)},
            ]
        }
        for n in range(4)
    ]
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    async with TrainingClient(_address(stack, "training")) as training:
        dataset = (await training.upload_dataset(data, name="trace-check", format="chat", max_length=32)).dataset
        job = await training.create_job(dataset_version=dataset.version, adapter_name="trace-check", max_steps=1)
        await training.cancel_job(job.id)
    assert len(job.trace_id) == 32 and int(job.trace_id, 16) != 0
    trace = await asyncio.to_thread(jaeger.query.wait_for_trace, job.trace_id, min_spans=2, services={TRAINING})
    (create,) = trace.named("/lorag.training.v1.TrainingService/CreateTrainingJob")
    assert create.service == TRAINING and create.kind == "server"
    (step,) = trace.named("training_job")
    assert step.parent_id == create.span_id and step.tags["lorag.training.job_id"] == job.id
    assert step.tags["lorag.training.method"] == "TRAINING_METHOD_LORA"
