"""CrossEncoderReranker: the loading code path and its errors, and a forward pass on a fresh head.

No cross-encoder weights exist offline (see ENVIRONMENT.md), so the scoring test builds a **code-path test model**:
``CrossEncoder(<packaged all-MiniLM-L6-v2 folder>, num_labels=1)`` — the bi-encoder's BERT with a freshly
initialised, untrained classification head. It proves that loading, tokenisation, batching off the event loop and
the one-score-per-passage contract work; its scores mean nothing, so no test here asserts ranking quality.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from lorag_core.errors import InvalidArgument, ResourceExhausted, Unavailable
from lorag_embedding.backends.local import default_model_path
from lorag_retrieval.rerankers import CrossEncoderLoadError, CrossEncoderReranker, Reranker


@pytest.mark.service
async def test_a_missing_model_folder_fails_to_load_with_a_clear_error(tmp_path):
    reranker = CrossEncoderReranker(tmp_path / "no-such-model")
    with pytest.raises(CrossEncoderLoadError, match="no CrossEncoder model folder at"):
        await reranker.start()
    await reranker.close()


@pytest.mark.service
async def test_a_folder_without_a_model_fails_to_load(tmp_path):
    reranker = CrossEncoderReranker(tmp_path)
    with pytest.raises(CrossEncoderLoadError, match="cannot load CrossEncoder model"):
        await reranker.start()


@pytest.mark.service
async def test_a_hub_id_offline_fails_to_load(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reranker = CrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2")
    with pytest.raises(CrossEncoderLoadError, match="ms-marco-MiniLM-L-6-v2"):
        await reranker.start()


@pytest.mark.unit
async def test_without_the_extra_the_error_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # what an image without the extra looks like
    reranker = CrossEncoderReranker(default_model_path())
    with pytest.raises(CrossEncoderLoadError, match=r"lorag-retrieval\[cross-encoder\]"):
        await reranker.start()


@pytest.mark.unit
def test_constructor_checks_its_arguments():
    with pytest.raises(ValueError):
        CrossEncoderReranker("")
    with pytest.raises(ValueError):
        CrossEncoderReranker("m", batch_size=0)


@pytest.fixture(scope="module")
async def fresh_head():
    """CODE-PATH TEST MODEL: MiniLM's encoder with an untrained one-score head; not a reranker."""
    reranker = CrossEncoderReranker(
        default_model_path(),
        model_id="code-path-test/minilm-fresh-head",
        num_labels=1,
        max_length=64,
        device="cpu",
        batch_size=4,
        max_queue_passages=64,
    )
    await reranker.start()
    yield reranker
    await reranker.close()


@pytest.mark.service
async def test_code_path_one_score_per_passage_in_order(fresh_head: CrossEncoderReranker):
    assert isinstance(fresh_head, Reranker)
    passages = ["Paris is the capital of France.", "LoRA trains adapters.", "x", "Weaviate stores vectors."] * 3
    result = await fresh_head.rerank("capital of France", passages)
    assert len(result.scores) == len(passages) and all(isinstance(s, float) for s in result.scores)
    assert result.scores[0] == pytest.approx(result.scores[4], abs=1e-5)  # same pair, same score, any batch
    assert result.model == "code-path-test/minilm-fresh-head"
    assert result.prompt_tokens > 0 and result.inference_ns > 0
    assert fresh_head.token_limit == 64


@pytest.mark.service
async def test_code_path_truncate_false_refuses_an_overlong_pair(fresh_head):
    long_passage = "adapter " * 200
    assert len((await fresh_head.rerank("q", ["short", long_passage], truncate=True)).scores) == 2
    with pytest.raises(InvalidArgument) as failure:
        await fresh_head.rerank("q", ["short", long_passage], truncate=False)
    assert [v.field for v in failure.value.violations] == ["passages[1]"]


@pytest.mark.service
async def test_code_path_queue_bound_and_event_loop_stays_free(fresh_head):
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    clock = asyncio.ensure_future(ticker())
    try:
        first = asyncio.ensure_future(fresh_head.rerank("q", ["a passage about adapters " * 8] * 60))
        await asyncio.sleep(0)  # the first call holds 60 of the 64 queue slots
        with pytest.raises(ResourceExhausted) as failure:
            await fresh_head.rerank("q", ["one", "two", "three", "four", "five"])
        assert failure.value.reason == "QUEUE_FULL"
        await first
    finally:
        clock.cancel()
    assert ticks > 0  # inference ran on the worker thread, not on the loop


@pytest.mark.unit
async def test_closed_reranker_is_unavailable():
    reranker = CrossEncoderReranker(default_model_path(), num_labels=1)
    await reranker.close()
    with pytest.raises(Unavailable):
        await reranker.rerank("q", ["a"])
