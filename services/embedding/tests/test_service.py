"""Service tier: the real embedding service on port 0 with the packaged all-MiniLM-L6-v2, called over gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from lorag_client import EmbeddingClient
from lorag_core.downstream import status_details
from lorag_core.errors import LoragError
from lorag_core.server import ServiceApp
from lorag_embedding.backends import Embedder
from lorag_embedding.backends.local import default_model_path
from lorag_embedding.config import EmbeddingSettings
from lorag_embedding.server import create_app

pytestmark = pytest.mark.service

GRPCURL = shutil.which("grpcurl") or str(
    Path(os.environ.get("LORAG_CACHE", Path.home() / ".cache/lorag")) / "bin/grpcurl"
)


async def start_service(**overrides) -> tuple[ServiceApp, Embedder]:
    app, embedder = create_app(EmbeddingSettings(port=0, **overrides))
    await app.start()
    await embedder.start()
    await app.set_serving()
    return app, embedder


@pytest.fixture(scope="module")
async def service():
    app, embedder = await start_service()
    yield app
    await app.stop(0)
    await embedder.close()


@pytest.fixture(scope="module")
async def client(service):
    async with EmbeddingClient(service.address) as c:
        yield c


@pytest.fixture(scope="module")
def reference_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_path()), device="cpu")


def reasons(error: LoragError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the BadRequest field paths of a failed call."""
    return error.reason, [v.field for v in error.violations]


async def test_vectors_match_the_in_process_model(client, reference_model):
    texts = ["Weaviate stores vectors.", "LoRA adapts a model cheaply.", "Paris is the capital of France."]
    response = await client.embed(texts)
    got = np.array([e.values for e in response.embeddings], dtype=np.float32)
    want = reference_model.encode(texts, normalize_embeddings=True)
    assert got.shape == (3, 384)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert response.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert [e.token_count for e in response.embeddings] == [
        len(reference_model.tokenizer(t)["input_ids"]) for t in texts
    ]
    assert response.usage.prompt_tokens == sum(e.token_count for e in response.embeddings)
    assert response.timing.total_ns >= response.timing.inference_ns > 0


async def test_query_and_document_rank_the_right_passage_first(client):
    query = (await client.embed_vectors(["what is the capital of France?"], input_type="query"))[0]
    docs = await client.embed_vectors(["Paris is the capital of France.", "LoRA adds low-rank matrices to layers."])
    scores = np.array(docs) @ np.array(query)
    assert scores[0] > scores[1]


async def test_info_reports_model_and_limits(client):
    info = await client.info()
    assert (info.dimensions, info.max_input_tokens, info.backend, info.normalized) == (384, 256, "local", True)
    assert info.max_client_batch_size == 256


async def test_overlong_text_is_truncated_by_default_and_refused_on_request(client):
    long_text = "token " * 600
    response = await client.embed([long_text, "short"])
    assert [e.truncated for e in response.embeddings] == [True, False]
    assert response.embeddings[0].token_count == 256
    with pytest.raises(LoragError) as failure:
        await client.embed(["short", long_text], truncate=False)
    assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert reasons(failure.value) == ("TEXT_TOO_LONG", ["texts[1]"])


@pytest.mark.parametrize(
    ("texts", "reason", "fields"),
    [
        ([], "EMPTY_INPUT", ["texts"]),
        (["fine", "", "  "], "EMPTY_TEXT", ["texts[1]", "texts[2]"]),
        (["x"] * 257, "TOO_MANY_TEXTS", ["texts"]),
    ],
)
async def test_bad_input_is_invalid_argument_with_field_violations(client, texts, reason, fields):
    with pytest.raises(LoragError) as failure:
        await client.embed(texts)
    assert failure.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert reasons(failure.value) == (reason, fields)


async def test_invalid_utf8_is_invalid_argument(service):
    raw = bytes([0x0A, 0x03, 0x61, 0xFF, 0x62])  # texts[0] = b"a\xffb"
    async with grpc.aio.insecure_channel(service.address) as channel:
        embed = channel.unary_unary(
            "/lorag.embedding.v1.EmbeddingService/Embed", request_serializer=bytes, response_deserializer=bytes
        )
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await embed(raw)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert status_details(failure.value)[0] == "UNDECODABLE_REQUEST"  # a raw channel: the status itself


async def test_full_queue_answers_resource_exhausted_and_the_service_keeps_serving():
    app, embedder = await start_service(max_queue_texts=8, max_client_batch_size=8, max_batch_size=8)
    try:
        async with EmbeddingClient(app.address) as client:
            texts = ["a sentence long enough to take a moment to embed " * 8] * 8
            results = await asyncio.gather(*(client.embed(texts) for _ in range(12)), return_exceptions=True)
            codes = {r.code if isinstance(r, LoragError) else grpc.StatusCode.OK for r in results}
            assert codes == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
            exhausted = next(r for r in results if isinstance(r, LoragError))
            assert reasons(exhausted)[0] == "QUEUE_FULL"
            assert len((await client.embed(["still serving"])).embeddings) == 1
    finally:
        await app.stop(0)
        await embedder.close()


async def test_concurrent_callers_each_get_their_own_vector(client, reference_model):
    texts = [f"caller number {i} asks about topic {i * 7 % 13}" for i in range(64)]
    responses = await asyncio.gather(*(client.embed([t]) for t in texts))
    got = np.array([r.embeddings[0].values for r in responses], dtype=np.float32)
    np.testing.assert_allclose(got, reference_model.encode(texts, normalize_embeddings=True), atol=1e-5)


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False)


async def test_grpcurl_lists_describes_and_calls_embed_by_reflection(service):
    assert Path(GRPCURL).exists(), "grpcurl is installed by `make setup`"
    listed = await asyncio.to_thread(_grpcurl, service.address, "list")
    assert "lorag.embedding.v1.EmbeddingService" in listed.stdout.split()
    described = await asyncio.to_thread(
        _grpcurl, service.address, "describe", "lorag.embedding.v1.EmbeddingService.Embed"
    )
    assert described.returncode == 0, described.stderr
    assert "rpc Embed ( .lorag.embedding.v1.EmbedRequest )" in described.stdout
    called = await asyncio.to_thread(
        _grpcurl,
        "-d",
        '{"texts": ["hello from grpcurl"]}',
        service.address,
        "lorag.embedding.v1.EmbeddingService/Embed",
    )
    assert called.returncode == 0, called.stderr
    reply = json.loads(called.stdout)
    assert len(reply["embeddings"][0]["values"]) == 384


def test_bad_configuration_fails_fast_naming_the_variable():
    env = {**os.environ, "LORAG_EMBEDDING_MAX_BATCH_TOKENS": "-1", "LORAG_EMBEDDING_BACKEND": "onnx"}
    done = subprocess.run(
        [sys.executable, "-m", "lorag_embedding"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "LORAG_EMBEDDING_MAX_BATCH_TOKENS='-1'" in done.stderr
    assert "LORAG_EMBEDDING_BACKEND='onnx'" in done.stderr


def test_tei_backend_requires_its_url():
    env = {**os.environ, "LORAG_EMBEDDING_BACKEND": "tei"}
    env.pop("LORAG_EMBEDDING_TEI_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "lorag_embedding"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "LORAG_EMBEDDING_TEI_URL must be set" in done.stderr
