"""Fuzz tests: hypothesis-generated requests against the real services; the only acceptable failures are the
documented codes (DESIGN §8). A crash would surface as INTERNAL or UNKNOWN."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorag.embedding.v1 import embedding_service_pb2 as embedding_pb
from lorag.embedding.v1 import embedding_service_pb2_grpc as embedding_grpc
from lorag.gateway.v1 import gateway_service_pb2 as gateway_pb
from lorag.gateway.v1 import gateway_service_pb2_grpc as gateway_grpc
from lorag_client import GatewayClient, document, retrieval_options

pytestmark = pytest.mark.e2e

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))

texts = st.lists(st.text(max_size=400), max_size=300)
PASSAGE = "Fuzzing sends generated requests; a service must answer them or refuse them with a documented code."


@pytest.fixture(scope="module")
async def stubs(lorag_services):
    async with GatewayClient(lorag_services["gateway"]) as client:
        events = [e async for e in client.ingest([document(tenant="fuzz", collection="Fuzz", id="d", text=PASSAGE)])]
        assert events[-1].summary.failed_count == 0
    async with (
        grpc.aio.insecure_channel(lorag_services["embedding"]) as embedding,
        grpc.aio.insecure_channel(lorag_services["gateway"]) as gateway,
    ):
        yield embedding_grpc.EmbeddingServiceStub(embedding), gateway_grpc.GatewayServiceStub(gateway)


@FUZZ
@given(texts=texts, input_type=st.integers(0, 3), truncate=st.one_of(st.none(), st.booleans()))
async def test_embed_answers_vectors_or_a_documented_error(stubs, texts, input_type, truncate):
    request = embedding_pb.EmbedRequest(texts=texts, input_type=input_type)
    if truncate is not None:
        request.truncate = truncate
    try:
        response = await stubs[0].Embed(request, timeout=60)
    except grpc.aio.AioRpcError as error:
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), error
        return
    assert len(response.embeddings) == len(texts)
    assert all(len(e.values) == 384 for e in response.embeddings)


@FUZZ
@given(
    query=st.text(max_size=300),
    tenant=st.one_of(st.just("fuzz"), st.text(max_size=20)),
    collection=st.sampled_from(["Fuzz", "", "no such", "Missing1"]),
    mode=st.sampled_from(["dense", "keyword", "hybrid"]),
    top_k=st.integers(-5, 150),
    alpha=st.floats(-1, 2, allow_nan=False),
)
async def test_retrieve_answers_passages_or_a_documented_error(stubs, query, tenant, collection, mode, top_k, alpha):
    request = gateway_pb.RetrieveRequest(
        query=query,
        tenant=tenant,
        collection=collection,
        options=retrieval_options(mode=mode, top_k=top_k, alpha=alpha, rerank=False),
    )
    try:
        response = await stubs[1].Retrieve(request, timeout=60)
    except grpc.aio.AioRpcError as error:
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), error
        return
    assert len(response.chunks) <= top_k
    assert all(hit.chunk.document_id == "d" for hit in response.chunks)
