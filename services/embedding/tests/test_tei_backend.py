"""TEIEmbedder against a fake TEI that speaks TEI's published API, and against a real TEI when one is named.

The fake (:class:`lorag_testing.tei.FakeTEIEmbedder`) serves ``GET /info``, ``POST /embed`` and ``POST /tokenize`` as
TEI documents them (payloads, status codes, ``{"error", "error_type"}`` bodies, Bearer API key), computing vectors
and tokens with the real packaged all-MiniLM-L6-v2, so its answers are the ones a TEI serving that model gives.

Set ``LORAG_TEST_TEI_URL`` (and ``LORAG_TEST_TEI_API_KEY`` if the server has one) to run the live test.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest

from lorag_core.errors import InvalidArgument, LoragError, ResourceExhausted, Unavailable
from lorag_embedding.backends import Embedder, InputType, TEIEmbedder, default_model_path
from lorag_testing.tei import FakeTEIEmbedder

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def model() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_path()), device="cpu")


@pytest.fixture(scope="module")
def tei(model: Any) -> Iterator[FakeTEIEmbedder]:
    with FakeTEIEmbedder(model, prompts={"query": "query: "}) as server:
        yield server


@pytest.fixture
async def embedder(tei: FakeTEIEmbedder) -> AsyncIterator[TEIEmbedder]:
    e = TEIEmbedder(tei.url, timeout=10)
    await e.start()
    tei.reset()
    yield e
    await e.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_start_reads_info_prompts_and_dimensions(embedder: TEIEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    info = embedder.info
    assert info.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.backend == "tei"
    assert info.dimensions == 384
    assert info.max_input_tokens == 256
    assert info.max_client_batch_size == 8
    assert info.max_batch_tokens == 16384
    assert info.normalized is True
    assert info.prompts == {"query": ""}  # TEI accepted "query" and refused "document"


async def test_embeds_a_batch_in_one_call(embedder: TEIEmbedder, tei: FakeTEIEmbedder, model: Any) -> None:
    texts = ["hello world", "The quick brown fox.", "LoRA adapters are small.", "word " * 50, "bread"]
    result = await embedder.embed(texts, InputType.DOCUMENT, truncate=True)

    (call,) = tei.calls("/embed")
    assert call == {"inputs": texts, "normalize": True, "truncate": True}
    assert result.vectors.shape == (5, 384) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(result.vectors, model.encode(texts, normalize_embeddings=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert result.token_counts == [4, 7, len(model.tokenizer("LoRA adapters are small.")["input_ids"]), 52, 3]
    assert result.truncated == [False] * 5
    assert result.inference_ns > 0 and result.queue_ns >= 0


async def test_query_prompt_is_sent_by_name(embedder: TEIEmbedder, tei: FakeTEIEmbedder, model: Any) -> None:
    query = await embedder.embed(["how do I bake bread"], InputType.QUERY, truncate=True)
    document = await embedder.embed(["how do I bake bread"], InputType.DOCUMENT, truncate=True)
    first, second = tei.calls("/embed")
    assert first["prompt_name"] == "query" and "prompt_name" not in second
    assert query.token_counts[0] == document.token_counts[0] + 2  # "query" ":"
    np.testing.assert_allclose(
        query.vectors[0], model.encode("query: how do I bake bread", normalize_embeddings=True), atol=1e-5
    )


async def test_truncation_both_ways(embedder: TEIEmbedder, tei: FakeTEIEmbedder) -> None:
    long_text = "word " * 400
    result = await embedder.embed(["short", long_text], InputType.DOCUMENT, truncate=True)
    assert result.token_counts == [3, 256] and result.truncated == [False, True]

    tei.requests.clear()
    with pytest.raises(InvalidArgument) as refused:
        await embedder.embed(["short", long_text], InputType.DOCUMENT, truncate=False)
    assert [v.field for v in refused.value.violations] == ["texts[1]"]
    assert "402 tokens" in refused.value.violations[0].description
    assert tei.calls("/embed") == []  # refused before costing TEI an embedding


async def test_shared_request_rules(embedder: TEIEmbedder, tei: FakeTEIEmbedder) -> None:
    with pytest.raises(InvalidArgument) as empty:
        await embedder.embed([], InputType.QUERY, truncate=True)
    assert [v.field for v in empty.value.violations] == ["texts"]
    with pytest.raises(InvalidArgument) as blank:
        await embedder.embed(["ok", " "], InputType.QUERY, truncate=True)
    assert [v.field for v in blank.value.violations] == ["texts[1]"]
    with pytest.raises(InvalidArgument) as too_many:
        await embedder.embed(["x"] * 9, InputType.QUERY, truncate=True)  # TEI's max_client_batch_size is 8
    assert "8" in too_many.value.violations[0].description
    assert tei.requests == []


async def test_service_limit_can_lower_teis_batch_limit(tei: FakeTEIEmbedder) -> None:
    e = TEIEmbedder(tei.url, max_client_batch_size=3)
    await e.start()
    assert e.info.max_client_batch_size == 3
    with pytest.raises(InvalidArgument):
        await e.embed(["a", "b", "c", "d"], InputType.DOCUMENT, truncate=True)
    await e.close()
    e = TEIEmbedder(tei.url, max_client_batch_size=1000)
    await e.start()
    assert e.info.max_client_batch_size == 8  # TEI's own limit stands
    await e.close()


async def test_concurrent_callers(embedder: TEIEmbedder, model: Any) -> None:
    texts = [f"caller {i} writes about subject {i % 5}" for i in range(24)]
    results = await asyncio.gather(*(embedder.embed([t], InputType.DOCUMENT, truncate=True) for t in texts))
    expected = model.encode(texts, normalize_embeddings=True)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.vectors[0], expected[i], atol=1e-5)


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (429, "Overloaded", ResourceExhausted),
        (422, "Tokenizer", InvalidArgument),
        (413, "Validation", InvalidArgument),
        (400, "Empty", InvalidArgument),
        (424, "Backend", Unavailable),
        (503, "Unhealthy", Unavailable),
        (500, "Backend", Unavailable),
    ],
)
async def test_tei_errors_are_mapped(
    embedder: TEIEmbedder, tei: FakeTEIEmbedder, status: int, error_type: str, expected: type[LoragError]
) -> None:
    tei.fail("/embed", status, error_type, f"injected {error_type.lower()} failure")
    with pytest.raises(expected) as raised:
        await embedder.embed(["hello"], InputType.DOCUMENT, truncate=True)
    error = raised.value
    assert error.metadata["http_status"] == str(status)
    assert error.metadata["tei_error_type"] == error_type.lower()
    assert "injected" in error.message
    if expected is InvalidArgument:
        assert [v.field for v in error.violations] == ["texts"]
    # The next call goes through.
    assert (await embedder.embed(["hello"], InputType.DOCUMENT, truncate=True)).vectors.shape == (1, 384)


async def test_server_down_is_unavailable(model: Any) -> None:
    with pytest.raises(Unavailable) as at_start:
        await TEIEmbedder(f"http://127.0.0.1:{free_port()}", timeout=5).start()
    assert at_start.value.metadata["dependency"] == "tei"

    server = FakeTEIEmbedder(model).start()
    e = TEIEmbedder(server.url, timeout=5)
    await e.start()
    server.stop()
    with pytest.raises(Unavailable):
        await e.embed(["anyone there?"], InputType.DOCUMENT, truncate=True)
    await e.close()
    with pytest.raises(Unavailable):
        await e.embed(["after close"], InputType.DOCUMENT, truncate=True)


async def test_unresponsive_server_times_out_as_unavailable(model: Any) -> None:
    with FakeTEIEmbedder(model) as server:
        server.delay = 30  # connections are accepted, answers never come in time
        with pytest.raises(Unavailable) as raised:
            await TEIEmbedder(server.url, timeout=0.3).start()
    assert raised.value.reason == "DEPENDENCY_TIMEOUT"


async def test_api_key_is_sent_and_no_other_token_leaks(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_saved_hub_token_must_not_leak")
    with FakeTEIEmbedder(model, api_key="s3cret") as server:
        with pytest.raises(Unavailable) as refused:
            await TEIEmbedder(server.url, timeout=5).start()
        assert refused.value.metadata["http_status"] == "401"
        assert all("authorization" not in headers for _, _, _, headers in server.requests)

        server.requests.clear()
        e = TEIEmbedder(server.url, api_key="s3cret", timeout=5)
        await e.start()
        result = await e.embed(["with a key"], InputType.DOCUMENT, truncate=True)
        assert result.vectors.shape == (1, 384)
        assert {headers.get("authorization") for _, _, _, headers in server.requests} == {"Bearer s3cret"}
        await e.close()


async def test_works_in_hub_offline_mode(tei: FakeTEIEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 blocks huggingface_hub's own sessions; a self-hosted TEI must still be reachable."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    e = TEIEmbedder(tei.url, timeout=5)
    await e.start()
    assert (await e.embed(["offline deployments still embed"], InputType.QUERY, truncate=True)).vectors.shape == (
        1,
        384,
    )
    await e.close()


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("LORAG_TEST_TEI_URL"), reason="set LORAG_TEST_TEI_URL to test a real TEI")
async def test_live_tei() -> None:
    e = TEIEmbedder(
        os.environ["LORAG_TEST_TEI_URL"], api_key=os.environ.get("LORAG_TEST_TEI_API_KEY") or None, timeout=30
    )
    await e.start()
    try:
        info = e.info
        assert info.dimensions > 0 and info.max_input_tokens > 0 and info.max_client_batch_size > 0
        texts = [
            "How do I bake bread at home?",
            "A simple recipe for homemade bread baked in your oven.",
            "The central bank raised interest rates.",
        ]
        result = await e.embed(texts, InputType.DOCUMENT, truncate=True)
        assert result.vectors.shape == (3, info.dimensions)
        np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-3)
        scores = result.vectors[1:] @ result.vectors[0]
        assert scores[0] > scores[1]
        assert all(n > 0 for n in result.token_counts)

        long_text = "word " * (info.max_input_tokens + 10)
        cut = await e.embed([long_text], InputType.QUERY, truncate=True)
        assert cut.truncated == [True] and cut.token_counts == [info.max_input_tokens]
        with pytest.raises(InvalidArgument):
            await e.embed([long_text], InputType.QUERY, truncate=False)
    finally:
        await e.close()
