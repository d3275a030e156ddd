"""The default ``fusion`` reranker with the real all-MiniLM-L6-v2, in process in place of the embedding service."""

from __future__ import annotations

import pytest

from lorag_retrieval.rerankers import FusionReranker, FusionWeights, Reranker

QUERY = "Which enzyme does aspirin inhibit?"
PASSAGES = [
    # The answer sits in one sentence of a long passage about something else: MaxP finds it.
    "Cardiology notes\nPatients were followed for five years. Blood pressure was recorded monthly. Diet varied "
    "widely between groups. Aspirin irreversibly inhibits the cyclooxygenase enzyme COX-1. Outcomes were mixed.",
    "Gardening\nTomatoes need sun and regular watering. Prune the side shoots weekly.",
    "Enzymes\nEnzymes are proteins that speed up chemical reactions in cells.",
    "Painkillers\nMany painkillers are sold over the counter in pharmacies.",
]


@pytest.mark.service
async def test_the_passage_with_the_answer_sentence_ranks_first(encoder):
    reranker = FusionReranker(encoder)
    assert isinstance(reranker, Reranker)
    # Search order put the answer last: fusion must move it up.
    result = await reranker.rerank(QUERY, PASSAGES, first_stage=[0.2, 0.9, 0.8, 0.7])
    assert max(range(len(PASSAGES)), key=lambda i: result.scores[i]) == 0
    assert all(0.0 <= s <= 1.0 for s in result.scores)
    assert result.model == "fusion:bm25+maxp(sentence-transformers/all-MiniLM-L6-v2)"
    assert result.prompt_tokens > 0 and result.inference_ns > 0
    # One call for the query, one for the sentences; no whole-passage call when first-stage scores are given.
    assert [kind for kind, _ in encoder.calls] == ["query", "document"]
    assert "Aspirin irreversibly inhibits the cyclooxygenase enzyme COX-1." in encoder.calls[1][1]
    assert "Cardiology notes" in encoder.calls[1][1]  # the title line is a sentence of its own


@pytest.mark.service
async def test_without_first_stage_scores_the_whole_passage_similarity_stands_in(encoder):
    reranker = FusionReranker(encoder)
    result = await reranker.rerank(QUERY, PASSAGES)
    assert max(range(len(PASSAGES)), key=lambda i: result.scores[i]) == 0
    assert [kind for kind, _ in encoder.calls] == ["query", "document", "document"]
    assert encoder.calls[2][1] == PASSAGES


@pytest.mark.service
async def test_sentence_vectors_are_cached(encoder):
    reranker = FusionReranker(encoder, sentence_cache=100)
    first = await reranker.rerank(QUERY, PASSAGES, first_stage=[4, 3, 2, 1])
    encoder.calls.clear()
    again = await reranker.rerank(QUERY, PASSAGES, first_stage=[4, 3, 2, 1])
    assert [kind for kind, _ in encoder.calls] == ["query"]  # every sentence came from the cache
    assert again.scores == pytest.approx(first.scores, abs=1e-5)
    small = FusionReranker(encoder, sentence_cache=2)
    await small.rerank(QUERY, PASSAGES, first_stage=[4, 3, 2, 1])
    assert len(small._cache) == 2  # bounded


@pytest.mark.service
async def test_bm25_only_weights_need_no_model(encoder):
    reranker = FusionReranker(encoder, weights=FusionWeights(first_stage=0.5, maxp=0.0, bm25=0.5))
    result = await reranker.rerank("cyclooxygenase aspirin", PASSAGES, first_stage=[1, 1, 1, 1])
    assert encoder.calls == []
    assert result.scores.index(max(result.scores)) == 0
    assert result.model == "fusion:bm25"


@pytest.mark.service
async def test_a_list_like_passage_is_grouped_into_at_most_max_sentences(encoder):
    reranker = FusionReranker(encoder, max_sentences=4)
    listing = " ".join(f"Item {i} is here." for i in range(20))
    await reranker.rerank("item", [listing], first_stage=[1.0])
    assert len(encoder.calls[1][1]) == 4


@pytest.mark.unit
def test_weights_are_checked():
    with pytest.raises(ValueError):
        FusionWeights(0, 0, 0)
    with pytest.raises(ValueError):
        FusionWeights(-1, 1, 1)
