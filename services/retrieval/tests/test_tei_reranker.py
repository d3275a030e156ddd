"""TEIReranker against a fake TEI that speaks TEI's published /rerank API, and against a real TEI if named.

The fake (:class:`lorag_testing.tei.FakeTEIReranker`) serves ``GET /info`` and ``POST /rerank`` as TEI documents them:
the request body
``{"query", "texts", "truncate", "raw_scores"}``, the answer ``[{"index", "score"}]`` sorted by score (best first),
``max_client_batch_size`` enforced with 413, an over-long input refused with 413 unless ``truncate``, errors as
``{"error", "error_type"}``, and an optional Bearer API key. Its scores are a word-overlap similarity passed through
a sigmoid: the protocol is what is under test, not the quality.

Set ``LORAG_TEST_TEI_RERANK_URL`` (and ``LORAG_TEST_TEI_RERANK_API_KEY`` if needed) to run the live test against a
real TEI serving a reranker model.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from lorag_core.errors import InvalidArgument, ResourceExhausted, Unavailable
from lorag_retrieval.rerankers import Reranker, TEIReranker
from lorag_testing.tei import FakeTEIReranker


@pytest.fixture
def tei() -> Iterator[FakeTEIReranker]:
    with FakeTEIReranker() as server:
        yield server


PASSAGES = [
    "LoRA trains low-rank adapters on frozen weights.",
    "Paris is the capital of France.",
    "Weaviate runs hybrid search over vectors and BM25.",
    "The capital of France hosts the French government.",
    "Adapters are small.",
    "Berlin is the capital of Germany.",
]


@pytest.mark.service
async def test_scores_come_back_in_input_order_across_batches(tei):
    reranker = TEIReranker(tei.url)
    assert isinstance(reranker, Reranker)
    await reranker.start()
    try:
        result = await reranker.rerank("capital of France", PASSAGES, truncate=True)
    finally:
        await reranker.close()
    assert len(result.scores) == len(PASSAGES)
    best = max(range(len(PASSAGES)), key=lambda i: result.scores[i])
    assert best == 1
    assert result.scores[1] > result.scores[5] > result.scores[0]  # France > Germany > LoRA
    assert all(0 < s < 1 for s in result.scores)  # raw_scores false: sigmoid outputs
    assert result.model == "BAAI/bge-reranker-base"  # from /info
    bodies = tei.calls("/rerank")
    # max_client_batch_size from /info: two requests, sent concurrently (so they may arrive in either order)
    assert sorted(b["texts"] for b in bodies) == sorted([PASSAGES[:4], PASSAGES[4:]])
    assert all(b["truncate"] is True and b["raw_scores"] is False and b["query"] == "capital of France" for b in bodies)
    # The second batch's scores are placed at positions 4 and 5 of the whole list, whatever TEI's sort order.
    direct = tei.rerank({"query": "capital of France", "texts": PASSAGES[4:], "truncate": True})
    assert result.scores[4:] == [next(r["score"] for r in direct if r["index"] == i) for i in range(2)]


@pytest.mark.service
async def test_start_does_not_need_tei_and_info_failure_falls_back_to_defaults():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reranker = TEIReranker(f"http://127.0.0.1:{port}", model="my-reranker", timeout=2)
    await reranker.start()  # nothing listens there: start succeeds anyway
    with pytest.raises(Unavailable) as failure:
        await reranker.rerank("q", ["a"])
    assert failure.value.metadata["dependency"] == "tei"
    assert reranker.model == "my-reranker" and reranker.max_client_batch_size == 32
    await reranker.close()


@pytest.mark.service
async def test_truncate_false_refuses_an_overlong_pair_as_invalid_argument(tei):
    reranker = TEIReranker(tei.url)
    await reranker.start()
    long_passage = "word " * 100
    try:
        ok = await reranker.rerank("q", [long_passage], truncate=True)
        assert len(ok.scores) == 1
        with pytest.raises(InvalidArgument) as failure:
            await reranker.rerank("q", [long_passage], truncate=False)
    finally:
        await reranker.close()
    assert failure.value.violations[0].field == "passages"
    assert "less than 64 tokens" in failure.value.message
    assert failure.value.metadata["http_status"] == "413"


@pytest.mark.service
@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (429, "Overloaded", ResourceExhausted),
        (424, "Backend", Unavailable),
        (500, "Backend", Unavailable),
        (422, "Tokenizer", InvalidArgument),
    ],
)
async def test_tei_errors_map_to_lorag_errors(tei, status, error_type, expected):
    reranker = TEIReranker(tei.url)
    await reranker.start()
    await reranker.rerank("q", ["warm up /info"])
    tei.fail("/rerank", status, error_type, f"{error_type} trouble")
    try:
        with pytest.raises(expected) as failure:
            await reranker.rerank("q", ["a"])
    finally:
        await reranker.close()
    assert f"{error_type} trouble" in failure.value.message
    assert failure.value.metadata["tei_error_type"] == error_type.lower()


@pytest.mark.service
async def test_api_key_is_sent_as_bearer_token():
    with FakeTEIReranker(api_key="s3cret") as server:
        anonymous = TEIReranker(server.url)
        await anonymous.start()
        with pytest.raises(Unavailable):  # 401 is not the caller's fault: the service is misconfigured
            await anonymous.rerank("q", ["a"])
        await anonymous.close()
        keyed = TEIReranker(server.url, api_key="s3cret")
        await keyed.start()
        assert len((await keyed.rerank("q", ["a", "b"])).scores) == 2
        await keyed.close()


@pytest.mark.service
async def test_a_broken_response_is_unavailable(tei, monkeypatch):
    reranker = TEIReranker(tei.url)
    await reranker.start()
    monkeypatch.setattr(tei, "rerank", lambda body: [{"index": 7, "score": 0.5}])
    try:
        with pytest.raises(Unavailable) as failure:
            await reranker.rerank("q", ["a"])
    finally:
        await reranker.close()
    assert failure.value.reason == "DEPENDENCY_PROTOCOL_ERROR"


@pytest.mark.unit
def test_constructor_checks_its_arguments():
    with pytest.raises(ValueError):
        TEIReranker("tei:8080")
    with pytest.raises(ValueError):
        TEIReranker("http://tei", timeout=0)


@pytest.mark.service
@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("LORAG_TEST_TEI_RERANK_URL"), reason="LORAG_TEST_TEI_RERANK_URL names no TEI")
async def test_live_tei_rerank():
    reranker = TEIReranker(
        os.environ["LORAG_TEST_TEI_RERANK_URL"], api_key=os.environ.get("LORAG_TEST_TEI_RERANK_API_KEY"), timeout=60
    )
    await reranker.start()
    try:
        passages = [
            "Paris is the capital of France.",
            "LoRA adapts large models cheaply.",
            *[f"filler {i}" for i in range(40)],
        ]
        result = await reranker.rerank("What is the capital of France?", passages)
    finally:
        await reranker.close()
    assert len(result.scores) == len(passages)
    assert max(range(len(passages)), key=lambda i: result.scores[i]) == 0
    assert result.model
