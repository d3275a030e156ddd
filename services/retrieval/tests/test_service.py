"""Service tier: the real retrieval service on port 0, with the real embedding service (packaged all-MiniLM-L6-v2)
and the real indexer on the session's real Weaviate, all in this process, called over gRPC with the SDK.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import uuid
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2 as indexer_pb
from lorag.indexer.v1 import indexer_service_pb2_grpc as indexer_grpc
from lorag_client import EmbeddingClient, LoragError, RetrievalClient
from lorag_core.downstream import status_details
from lorag_retrieval.config import RetrievalSettings
from lorag_retrieval.server import create_app as create_retrieval

pytestmark = pytest.mark.service

COLLECTION = f"Rtv{uuid.uuid4().hex[:8]}"  # unique per run: other modules share the session's Weaviate
TENANT = "acme"

# document id → (title, [chunk texts], metadata)
DOCS: dict[str, tuple[str, list[str], dict[str, common_pb2.MetadataValue]]] = {
    "paris": (
        "Capitals",
        ["Paris is the capital and largest city of France. The Eiffel Tower stands on the Champ de Mars in Paris."],
        {"year": common_pb2.MetadataValue(int_value=2020)},
    ),
    "paris-mirror": (
        "Capitals",
        ["Paris is the capital and the largest city of France. The Eiffel Tower stands on the Champ de Mars, Paris."],
        {"year": common_pb2.MetadataValue(int_value=2021)},
    ),
    "berlin": ("Capitals", ["Berlin is the capital of Germany and its largest city."], {}),
    "lyon": ("Cities", ["Lyon is a city in France known for its cuisine and its silk industry."], {}),
    "lora": (
        "Fine-tuning",
        [
            "LoRA fine-tunes a large language model by training low-rank adapter matrices while the base weights "
            "stay frozen."
        ],
        {"year": common_pb2.MetadataValue(int_value=2021)},
    ),
    "weaviate": (
        "Vector databases",
        [
            "Weaviate is a vector database that runs hybrid search, combining BM25 keyword scores with vector "
            "similarity."
        ],
        {},
    ),
    "bm25": (
        "Search",
        ["BM25 ranks documents by term frequency and inverse document frequency, with length normalisation."],
        {},
    ),
    "guide": (
        "Operations",
        [
            "Install the lorag packages with make setup.",
            "Start the local stack with lorag up and check it with lorag status.",
        ],
        {"year": common_pb2.MetadataValue(int_value=2024)},
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def fails(code: grpc.StatusCode, call) -> tuple[LoragError, str, list[str]]:
    """The SDK's typed error for a call that must fail with ``code``, its reason and its violations' fields."""
    with pytest.raises(LoragError) as failure:
        await call
    assert failure.value.code == code, failure.value.message
    return failure.value, failure.value.reason, [v.field for v in failure.value.violations]


async def seed(embedding_address: str, indexer_address: str) -> None:
    async with EmbeddingClient(embedding_address) as embedder, grpc.aio.insecure_channel(indexer_address) as channel:
        indexer = indexer_grpc.IndexerServiceStub(channel)
        await indexer.CreateCollection(
            indexer_pb.CreateCollectionRequest(
                collection=indexer_pb.Collection(
                    name=COLLECTION, vector_dimensions=384, embedding_model="sentence-transformers/all-MiniLM-L6-v2"
                )
            )
        )
        records = []
        for doc_id, (title, texts, metadata) in DOCS.items():
            content = " ".join(texts)
            digest = hashlib.sha256(content.encode()).hexdigest()
            vectors = await embedder.embed_vectors([f"{title}\n{t}" for t in texts])
            offset = 0
            for index, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
                chunk = common_pb2.Chunk(
                    chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{COLLECTION}/{TENANT}/{doc_id}/{index}")),
                    document_id=doc_id,
                    text=text,
                    char_start=offset,
                    char_end=offset + len(text),
                    token_count=len(text.split()),
                    chunk_index=index,
                    title=title,
                    source_uri=f"file:///docs/{doc_id}.md",
                    content_sha256=digest,
                    metadata=metadata,
                )
                records.append(indexer_pb.ChunkRecord(chunk=chunk, vector=vector))
                offset += len(text) + 1
        await indexer.UpsertChunks(indexer_pb.UpsertChunksRequest(collection=COLLECTION, tenant=TENANT, chunks=records))


async def start_retrieval(**overrides):
    app, retriever = create_retrieval(RetrievalSettings(port=0, **overrides))
    await app.start()
    await retriever.start()
    await app.set_serving()
    return app, retriever


@pytest.fixture(scope="module")
async def stack(weaviate):
    from lorag_embedding.config import EmbeddingSettings
    from lorag_embedding.server import create_app as create_embedding
    from lorag_indexer.config import IndexerSettings
    from lorag_indexer.server import create_app as create_indexer

    embedding_app, embedder = create_embedding(EmbeddingSettings(port=0))
    await embedding_app.start()
    await embedder.start()
    await embedding_app.set_serving()
    indexer_app, store = create_indexer(
        IndexerSettings(
            port=0,
            weaviate_host=weaviate.host,
            weaviate_http_port=weaviate.http_port,
            weaviate_grpc_port=weaviate.grpc_port,
        )
    )
    await indexer_app.start()
    await store.start()
    await indexer_app.set_serving()
    await seed(embedding_app.address, indexer_app.address)
    retrieval_app, retriever = await start_retrieval(
        embedding_address=embedding_app.address, indexer_address=indexer_app.address
    )
    yield {"embedding": embedding_app.address, "indexer": indexer_app.address, "retrieval": retrieval_app.address}
    await retrieval_app.stop(0)
    await retriever.close()
    await indexer_app.stop(0)
    await store.close()
    await embedding_app.stop(0)
    await embedder.close()


@pytest.fixture(scope="module")
async def client(stack):
    async with RetrievalClient(stack["retrieval"]) as c:
        yield c


def docs(response) -> list[str]:
    return [c.chunk.document_id for c in response.chunks]


async def retrieve(client, query: str, **options):
    return await client.retrieve(query, tenant=TENANT, collection=COLLECTION, **options)


# -- the three search modes ------------------------------------------------------------------------------------------


async def test_vector_mode_finds_the_right_document_first(client):
    response = await retrieve(
        client, "How can a language model be adapted cheaply with small matrices?", mode="vector", rerank=False
    )
    assert docs(response)[0] == "lora"
    top = response.chunks[0]
    assert top.chunk.text == DOCS["lora"][1][0]
    assert (top.chunk.char_start, top.chunk.char_end) == (0, len(DOCS["lora"][1][0]))
    assert top.chunk.metadata["year"].int_value == 2021
    assert top.chunk.title == "Fine-tuning" and top.chunk.tenant == TENANT
    assert top.HasField("distance") and 0.0 <= top.distance < 1.0
    assert top.score == top.first_stage_score and not top.HasField("rerank_score") and top.first_stage_rank == 0
    assert len(response.chunks) == 5 and response.candidate_count == 5  # without rerank/MMR only top_k fetched
    assert response.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert not response.reranked and not response.degraded and not response.mmr_applied
    assert response.timing.embed_ns > 0 and response.timing.search_ns > 0 and response.timing.rerank_ns == 0
    assert response.timing.total_ns >= response.timing.embed_ns + response.timing.search_ns
    scores = [c.score for c in response.chunks]
    assert scores == sorted(scores, reverse=True)


async def test_keyword_mode_finds_the_right_document_first_without_embedding(client):
    response = await retrieve(client, "inverse document frequency", mode="keyword", rerank=False, top_k=3)
    assert docs(response)[0] == "bm25"
    assert response.embedding_model == "" and response.timing.embed_ns == 0
    assert not response.chunks[0].HasField("distance")


async def test_hybrid_mode_is_the_default_and_finds_the_right_document_first(client):
    response = await retrieve(client, "database combining keyword scores and vector similarity", rerank=False)
    assert docs(response)[0] == "weaviate"
    assert response.embedding_model and response.timing.embed_ns > 0


async def test_a_document_with_two_chunks_returns_the_matching_chunk_and_its_span(client):
    response = await retrieve(client, "how do I start the local stack and check its status", rerank=False, top_k=3)
    top = response.chunks[0]
    assert (top.chunk.document_id, top.chunk.chunk_index) == ("guide", 1)
    first = DOCS["guide"][1][0]
    assert (top.chunk.char_start, top.chunk.char_end) == (len(first) + 1, len(first) + 1 + len(top.chunk.text))


async def test_filter_restricts_the_candidates(client):
    year = common_pb2.Filter(
        field=common_pb2.FieldFilter(
            field="metadata.year",
            operator=common_pb2.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL,
            value=common_pb2.MetadataValue(int_value=2021),
        )
    )
    response = await retrieve(client, "capital of France", rerank=False, filter=year, top_k=10)
    assert set(docs(response)) <= {"paris-mirror", "lora", "guide"} and "paris-mirror" in docs(response)


# -- rerank and MMR --------------------------------------------------------------------------------------------------


async def test_rerank_is_on_by_default_and_scores_every_returned_chunk(client):
    response = await retrieve(client, "Which city is the capital of Germany?", top_k=3)
    assert response.reranked and not response.degraded
    assert response.reranker_model.startswith("fusion:bm25+maxp(")
    assert docs(response)[0] == "berlin"
    assert response.candidate_count == sum(len(t) for _, t, _ in DOCS.values())  # all 9 chunks were candidates
    for chunk in response.chunks:
        assert chunk.HasField("rerank_score") and chunk.score == chunk.rerank_score
    assert [c.score for c in response.chunks] == sorted((c.score for c in response.chunks), reverse=True)
    assert response.timing.rerank_ns > 0


async def test_mmr_removes_the_near_duplicate(client):
    query = "Eiffel Tower in the capital of France"
    plain = await retrieve(client, query, top_k=2, rerank=False, candidate_count=9)
    assert set(docs(plain)) == {"paris", "paris-mirror"}
    diverse = await retrieve(client, query, top_k=2, rerank=False, candidate_count=9, mmr=True)
    assert diverse.mmr_applied and not diverse.degraded
    assert docs(diverse)[0] == docs(plain)[0]
    assert docs(diverse)[1] not in {"paris", "paris-mirror"}
    assert diverse.chunks[1].first_stage_rank >= 2  # it came from further down the search order
    assert diverse.timing.mmr_ns > 0
    relevance_only = await retrieve(client, query, top_k=2, rerank=False, candidate_count=9, mmr=True, mmr_lambda=1.0)
    assert docs(relevance_only) == docs(plain)


async def test_rerank_then_mmr(client):
    response = await retrieve(client, "Eiffel Tower in the capital of France", top_k=3, mmr=True)
    assert response.reranked and response.mmr_applied and not response.degraded
    assert len({"paris", "paris-mirror"} & set(docs(response))) == 1


# -- degradations ---------------------------------------------------------------------------------------------------


async def test_reranker_down_returns_search_order_marked_degraded(stack):
    dead = f"http://127.0.0.1:{free_port()}"
    app, retriever = await start_retrieval(
        embedding_address=stack["embedding"],
        indexer_address=stack["indexer"],
        reranker="tei",
        reranker_url=dead,
        reranker_timeout_seconds=3,
    )
    try:
        async with RetrievalClient(app.address) as degraded_client:
            response = await retrieve(degraded_client, "Which city is the capital of Germany?", top_k=4)
            plain = await retrieve(degraded_client, "Which city is the capital of Germany?", top_k=4, rerank=False)
    finally:
        await app.stop(0)
        await retriever.close()
    assert response.degraded and not response.reranked and response.reranker_model == ""
    [degradation] = response.degradations
    assert degradation.stage == common_pb2.RETRIEVAL_STAGE_RERANK
    assert degradation.reason.startswith("reranker unavailable:") and "search order returned" in degradation.reason
    assert [c.first_stage_rank for c in response.chunks] == [0, 1, 2, 3]
    assert docs(response) == docs(plain)
    assert all(not c.HasField("rerank_score") and c.score == c.first_stage_score for c in response.chunks)


async def test_rerank_asked_for_without_a_reranker_is_degraded_not_failed(stack):
    app, retriever = await start_retrieval(
        embedding_address=stack["embedding"], indexer_address=stack["indexer"], reranker="none"
    )
    try:
        async with RetrievalClient(app.address) as c:
            default = await retrieve(c, "capital of Germany", top_k=2)
            asked = await retrieve(c, "capital of Germany", top_k=2, rerank=True)
            rerank_rpc = c.rerank("q", ["a"])
            _, reason, _ = await fails(grpc.StatusCode.FAILED_PRECONDITION, rerank_rpc)
    finally:
        await app.stop(0)
        await retriever.close()
    assert not default.degraded and not default.reranked and default.candidate_count == 2  # off by default
    assert asked.degraded and asked.degradations[0].stage == common_pb2.RETRIEVAL_STAGE_RERANK
    assert "no reranker is configured" in asked.degradations[0].reason
    assert reason == "NO_RERANKER"


async def test_embedding_down_hybrid_falls_back_to_keyword_and_vector_fails(stack):
    dead = f"127.0.0.1:{free_port()}"
    app, retriever = await start_retrieval(embedding_address=dead, indexer_address=stack["indexer"])
    try:
        async with RetrievalClient(app.address) as c:
            hybrid = await retrieve(c, "inverse document frequency", rerank=False)
            keyword = await retrieve(c, "inverse document frequency", mode="keyword", rerank=False)
            reranked = await retrieve(c, "inverse document frequency", mode="keyword")
            error, reason, _ = await fails(
                grpc.StatusCode.UNAVAILABLE, retrieve(c, "inverse document frequency", mode="vector")
            )
    finally:
        await app.stop(0)
        await retriever.close()
    assert hybrid.degraded and docs(hybrid)[0] == "bm25" and hybrid.embedding_model == ""
    [degradation] = hybrid.degradations
    assert degradation.stage == common_pb2.RETRIEVAL_STAGE_EMBED
    assert degradation.reason.startswith("embedding unavailable:") and "keyword search only" in degradation.reason
    assert not keyword.degraded and docs(keyword)[0] == "bm25"  # keyword mode never calls the embedding service
    # The default reranker reads through the embedding service: down, it degrades the rerank stage only.
    assert reranked.degraded and [d.stage for d in reranked.degradations] == [common_pb2.RETRIEVAL_STAGE_RERANK]
    assert docs(reranked)[0] == "bm25"
    assert "embedding" in error.message and reason == "DEPENDENCY_UNAVAILABLE"


async def test_indexer_down_is_unavailable_naming_the_indexer(stack):
    app, retriever = await start_retrieval(
        embedding_address=stack["embedding"], indexer_address=f"127.0.0.1:{free_port()}"
    )
    try:
        async with RetrievalClient(app.address) as c:
            error, reason, _ = await fails(grpc.StatusCode.UNAVAILABLE, retrieve(c, "anything", mode="keyword"))
    finally:
        await app.stop(0)
        await retriever.close()
    assert "indexer" in error.message and reason == "DEPENDENCY_UNAVAILABLE"


async def test_health_is_serving_although_every_dependency_is_down():
    app, retriever = await start_retrieval(
        embedding_address=f"127.0.0.1:{free_port()}", indexer_address=f"127.0.0.1:{free_port()}"
    )
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await app.stop(0)
        await retriever.close()
    assert status.status == health_pb2.HealthCheckResponse.SERVING


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "options", "fields"),
    [
        ("", {}, ["query"]),
        ("   ", {"top_k": 0}, ["query", "options.top_k"]),
        ("q", {"top_k": 101}, ["options.top_k"]),
        ("q", {"top_k": 10, "candidate_count": 5}, ["options.candidate_count"]),
        ("q", {"alpha": 2.0, "mmr": True, "mmr_lambda": -1.0}, ["options.alpha", "options.mmr_lambda"]),
    ],
)
async def test_bad_input_is_invalid_argument_with_field_violations(client, query, options, fields):
    _, reason, got = await fails(grpc.StatusCode.INVALID_ARGUMENT, retrieve(client, query, **options))
    assert got == fields and reason == "INVALID_ARGUMENT"


async def test_unknown_collection_and_tenant_are_not_found_passed_through(client):
    error, reason, _ = await fails(
        grpc.StatusCode.NOT_FOUND,
        client.retrieve("q", tenant=TENANT, collection=f"Missing{uuid.uuid4().hex[:6]}", mode="keyword"),
    )
    assert reason and reason != "INTERNAL" and error.message
    error2, reason2, _ = await fails(
        grpc.StatusCode.NOT_FOUND, client.retrieve("q", tenant="nobody", collection=COLLECTION, mode="keyword")
    )
    assert reason2 and "nobody" in error2.message


async def test_not_found_keeps_the_indexers_message_and_reason(stack, client):
    missing = f"Missing{uuid.uuid4().hex[:6]}"
    async with grpc.aio.insecure_channel(stack["indexer"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as direct:
            await indexer_grpc.IndexerServiceStub(channel).Search(
                indexer_pb.SearchRequest(
                    collection=missing, tenant=TENANT, mode=common_pb2.SEARCH_MODE_KEYWORD, query_text="q", limit=5
                )
            )
    error, reason, _ = await fails(
        grpc.StatusCode.NOT_FOUND, client.retrieve("q", tenant=TENANT, collection=missing, mode="keyword")
    )
    assert error.message == direct.value.details()
    assert reason == status_details(direct.value)[0]


async def test_a_bad_filter_is_invalid_argument_naming_the_options_field(client):
    bad = common_pb2.Filter(
        field=common_pb2.FieldFilter(
            field="no_such_field",
            operator=common_pb2.FILTER_OPERATOR_EQUAL,
            value=common_pb2.MetadataValue(string_value="x"),
        )
    )
    _, _, fields = await fails(grpc.StatusCode.INVALID_ARGUMENT, retrieve(client, "q", filter=bad, mode="keyword"))
    assert fields and all(f.startswith("options.filter") for f in fields)


# -- Rerank RPC -------------------------------------------------------------------------------------------------------


async def test_rerank_rpc_orders_passages_best_first(client):
    passages = [
        "LoRA trains low-rank adapters.",
        "Berlin is the capital of Germany.",
        "Weaviate stores vectors.",
        "Germany's capital city is Berlin, on the Spree.",
    ]
    response = await client.rerank("What is the capital of Germany?", passages)
    assert [r.index for r in response.results][:2] in ([1, 3], [3, 1])
    assert sorted(r.index for r in response.results) == [0, 1, 2, 3]
    scores = [r.score for r in response.results]
    assert scores == sorted(scores, reverse=True)
    assert response.model.startswith("fusion:") and response.usage.prompt_tokens > 0
    assert response.timing.total_ns >= response.timing.inference_ns > 0
    top = await client.rerank("What is the capital of Germany?", passages, top_n=1)
    assert len(top.results) == 1 and top.results[0].index == response.results[0].index


@pytest.mark.parametrize(
    ("query", "passages", "top_n", "fields"),
    [
        ("", ["a"], None, ["query"]),
        ("q", [], None, ["passages"]),
        ("q", ["a", " "], None, ["passages[1]"]),
        ("q", ["a"] * 1001, None, ["passages"]),
        ("q", ["a"], 0, ["top_n"]),
    ],
)
async def test_rerank_rpc_bad_input(client, query, passages, top_n, fields):
    _, _, got = await fails(grpc.StatusCode.INVALID_ARGUMENT, client.rerank(query, passages, top_n=top_n))
    assert got == fields


async def test_rerank_rpc_truncate_false_names_the_passage(client):
    long_sentence = "adapter " * 400  # one sentence over the embedding model's 256 tokens
    _, reason, fields = await fails(
        grpc.StatusCode.INVALID_ARGUMENT, client.rerank("q", ["short one.", long_sentence], truncate=False)
    )
    assert fields == ["passages[1]"] and reason == "TEXT_TOO_LONG"
    ok = await client.rerank("q", ["short one.", long_sentence])
    assert len(ok.results) == 2


# -- traces -----------------------------------------------------------------------------------------------------------


async def test_stage_spans_carry_scope_attributes_and_never_text(client):
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]  # the SDK provider
    secret = "zanzibar quokka capital of France"
    await retrieve(client, secret, top_k=2, mmr=True)
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name.startswith("retrieval.")}
    assert set(spans) == {"retrieval.embed", "retrieval.search", "retrieval.rerank", "retrieval.mmr"}
    for span in spans.values():
        attributes: dict[str, Any] = dict(span.attributes or {})
        assert attributes["lorag.tenant"] == TENANT and attributes["lorag.collection"] == COLLECTION
        assert attributes["lorag.retrieval.mode"] == "hybrid" and attributes["lorag.retrieval.k"] >= 1
        assert all("zanzibar" not in str(v) for v in attributes.values())
    server = next(s for s in exporter.get_finished_spans() if s.name.endswith("RetrievalService/Retrieve"))
    search_parent = spans["retrieval.search"].parent
    assert search_parent is not None and search_parent.span_id == server.context.span_id
    downstream = [s for s in exporter.get_finished_spans() if s.name.endswith("IndexerService/Search")]
    assert any(s.context.trace_id == server.context.trace_id for s in downstream)
    exporter.shutdown()


# -- configuration ---------------------------------------------------------------------------------------------------


def test_bad_configuration_fails_fast_naming_the_variable():
    env = {**os.environ, "LORAG_RETRIEVAL_RERANKER": "colbert", "LORAG_RETRIEVAL_PORT": "-3"}
    done = subprocess.run(
        [sys.executable, "-m", "lorag_retrieval"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "LORAG_RETRIEVAL_RERANKER='colbert'" in done.stderr and "LORAG_RETRIEVAL_PORT='-3'" in done.stderr


def test_tei_reranker_requires_its_url():
    env = {**os.environ, "LORAG_RETRIEVAL_RERANKER": "tei"}
    env.pop("LORAG_RETRIEVAL_RERANKER_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "lorag_retrieval"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "LORAG_RETRIEVAL_RERANKER_URL must be set" in done.stderr


async def test_concurrent_retrievals(client):
    queries = ["capital of Germany", "inverse document frequency", "low-rank adapters", "vector database"] * 4
    responses = await asyncio.gather(*(retrieve(client, q, top_k=1) for q in queries))
    assert [docs(r)[0] for r in responses] == ["berlin", "bm25", "lora", "weaviate"] * 4


# -- the embedding dependency ----------------------------------------------------------------------------------------


async def test_long_lists_are_split_to_the_embedding_services_limit_and_errors_name_the_whole_list():
    from lorag_client import EmbeddingClient
    from lorag_core.errors import InvalidArgument
    from lorag_embedding.config import EmbeddingSettings
    from lorag_embedding.server import create_app as create_embedding
    from lorag_retrieval.encoder import Encoder

    app, embedder = create_embedding(EmbeddingSettings(port=0, max_client_batch_size=4, max_queue_texts=64))
    await app.start()
    await embedder.start()
    await app.set_serving()
    service = Encoder(EmbeddingClient(app.address))
    try:
        texts = [f"sentence number {i} about adapters" for i in range(10)]
        together = await service.encode(texts)
        alone = [await service.encode([t]) for t in texts[:2]]
        assert together.vectors.shape == (10, 384) and together.tokens > 0
        assert together.model == "sentence-transformers/all-MiniLM-L6-v2"
        for row, single in enumerate(alone):
            assert (abs(together.vectors[row] - single.vectors[0]) < 1e-5).all()
        with pytest.raises(InvalidArgument) as failure:
            await service.encode([*texts[:6], "adapter " * 400, "short"], truncate=False)
        assert [v.field for v in failure.value.violations] == ["texts[6]"]  # slice 2, position 2 → index 6
    finally:
        await service.close()
        await app.stop(0)
        await embedder.close()
