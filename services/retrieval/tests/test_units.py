"""Unit tier: the pure parts of retrieval — MMR, score fusion, BM25 and sentences, request rules, error conversion."""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status

from lorag.common.v1 import common_pb2
from lorag.retrieval.v1 import retrieval_service_pb2 as pb
from lorag_core.downstream import error_from_rpc, prefix_fields
from lorag_core.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    LoragError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from lorag_core.interceptors import current_deadline, serving_call
from lorag_retrieval.convert import plan_retrieval
from lorag_retrieval.mmr import cosine_matrix, mmr
from lorag_retrieval.rerankers.base import MAX_PASSAGES, validate_rerank
from lorag_retrieval.rerankers.text import bm25, sentences, words
from lorag_retrieval.score_fusion import min_max, ranks, rrf, weighted_sum

pytestmark = pytest.mark.unit

# -- MMR -------------------------------------------------------------------------------------------------------------


def test_mmr_with_lambda_one_is_the_relevance_order():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 8))
    relevance = [0.1, 0.9, 0.5, 0.9, 0.3, 0.7]
    assert mmr(relevance, vectors, 6, 1.0) == [1, 3, 5, 2, 4, 0]  # ties keep candidate order


def test_mmr_drops_a_near_duplicate_in_favour_of_a_different_passage():
    a = np.array([1.0, 0.0, 0.0])
    near_copy = np.array([0.99, 0.01, 0.0])
    other = np.array([0.0, 1.0, 0.0])
    relevance = [1.0, 0.98, 0.6]
    assert mmr(relevance, np.stack([a, near_copy, other]), 2, 0.5) == [0, 2]
    assert mmr(relevance, np.stack([a, near_copy, other]), 2, 1.0) == [0, 1]  # relevance alone keeps the copy


def test_mmr_with_lambda_zero_spreads_out():
    vectors = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.7, 0.7]])
    chosen = mmr([1.0, 0.9, 0.1, 0.2], vectors, 3, 0.0)
    assert chosen[0] == 0 and chosen[1] == 2  # the most relevant first, then the least similar to it


def test_mmr_edges():
    vectors = np.eye(3)
    assert mmr([], np.zeros((0, 3)), 5, 0.5) == []
    assert mmr([1, 2, 3], vectors, 0, 0.5) == []
    assert sorted(mmr([1, 2, 3], vectors, 10, 0.5)) == [0, 1, 2]  # k above n returns everything once
    with pytest.raises(ValueError):
        mmr([1, 2], vectors, 2, 0.5)
    with pytest.raises(ValueError):
        mmr([1, 2, 3], vectors, 2, 1.5)


def test_cosine_matrix_handles_zero_rows():
    sims = cosine_matrix(np.array([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]]))
    assert sims[0, 2] == pytest.approx(1.0)
    assert sims[1].tolist() == [0.0, 0.0, 0.0]


# -- fusion ----------------------------------------------------------------------------------------------------------


def test_ranks_are_stable_on_ties():
    assert ranks([0.5, 0.9, 0.5, 0.1]) == [1, 0, 2, 3]


def test_rrf_sums_reciprocal_ranks():
    fused = rrf([[0, 1, 2], [2, 1, 0]], k=60)
    assert fused[0] == pytest.approx(1 / 61 + 1 / 63)
    assert fused[1] == pytest.approx(2 / 62)
    assert rrf([[0, 1]], weights=[2.0]) == pytest.approx([2 / 61, 2 / 62])
    with pytest.raises(ValueError):
        rrf([[0, 1], [0]])


def test_min_max_and_weighted_sum():
    assert min_max([2.0, 4.0, 3.0]) == [0.0, 1.0, 0.5]
    assert min_max([7.0, 7.0]) == [1.0, 1.0]
    assert min_max([1.0, math.nan, 3.0]) == [0.0, 0.0, 1.0]
    fused = weighted_sum([[0.0, 10.0, 5.0], [3.0, 1.0, 2.0]], [0.5, 0.5])
    assert fused == pytest.approx([0.5, 0.5, 0.5])
    assert weighted_sum([[0.0, 10.0, 5.0], [3.0, 1.0, 2.0]], [0.7, 0.3]) == pytest.approx([0.3, 0.7, 0.5])
    with pytest.raises(ValueError):
        weighted_sum([[1.0]], [0.5, 0.5])


# -- text --------------------------------------------------------------------------------------------------------------


def test_words_drop_stop_words_and_punctuation():
    assert words("What is the Capital of France?") == ["capital", "france"]


def test_sentences_split_at_lines_and_sentence_ends_but_not_decimals():
    text = "A title without a stop\nThe rate was 1.8 per ms. It fell (n = 7) to 1.2. Then it rose!"
    assert sentences(text) == [
        "A title without a stop",
        "The rate was 1.8 per ms.",
        "It fell (n = 7) to 1.2.",
        "Then it rose!",
    ]


def test_bm25_prefers_the_passage_with_the_rare_query_words():
    passages = [
        "Paris is the capital of France.",
        "The capital of a country hosts its government.",
        "LoRA trains low-rank adapters.",
    ]
    scores = bm25("capital of France", passages)
    assert scores[0] > scores[1] > scores[2] == 0.0
    assert bm25("the of", passages) == [0.0, 0.0, 0.0]  # stop words only
    assert bm25("x", []) == []


# -- request rules -------------------------------------------------------------------------------------------------


def request(**options) -> pb.RetrieveRequest:
    return pb.RetrieveRequest(query="q", tenant="t", collection="c", options=common_pb2.RetrievalOptions(**options))


def violations(call) -> list[str]:
    with pytest.raises(InvalidArgument) as failure:
        call()
    return [v.field for v in failure.value.violations]


def test_plan_defaults():
    plan = plan_retrieval(request())
    assert (plan.mode, plan.fusion) == (common_pb2.SEARCH_MODE_HYBRID, common_pb2.FUSION_TYPE_RELATIVE_SCORE)
    assert (plan.top_k, plan.candidate_count, plan.alpha, plan.mmr_lambda) == (5, 50, 0.5, 0.5)
    assert plan.rerank and not plan.mmr and plan.fetch_count == 50 and plan.filter is None
    plain = plan_retrieval(request(rerank=False))
    assert plain.fetch_count == 5  # without rerank and MMR only top_k are fetched
    assert plan_retrieval(request(top_k=80)).candidate_count == 80
    assert not plan_retrieval(request(), rerank_by_default=False).rerank
    assert plan_retrieval(request(), default_alpha=0.7).alpha == pytest.approx(0.7)


def test_plan_reports_every_bad_field():
    out_of_range_enums: dict[str, Any] = {"mode": 99, "fusion": 42}
    bad = pb.RetrieveRequest(
        query="  ",
        tenant="",
        collection="c",
        options=common_pb2.RetrievalOptions(top_k=0, alpha=1.5, mmr_lambda=-0.1, **out_of_range_enums),
    )
    assert violations(lambda: plan_retrieval(bad)) == [
        "query",
        "tenant",
        "options.mode",
        "options.fusion",
        "options.alpha",
        "options.mmr_lambda",
        "options.top_k",
    ]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"top_k": 101}, "options.top_k"),
        ({"top_k": -1}, "options.top_k"),
        ({"top_k": 10, "candidate_count": 5}, "options.candidate_count"),
        ({"candidate_count": 0}, "options.candidate_count"),
        ({"candidate_count": 1001}, "options.candidate_count"),
        ({"alpha": float("nan")}, "options.alpha"),
    ],
)
def test_plan_out_of_range(options, field):
    assert violations(lambda: plan_retrieval(request(**options))) == [field]


def test_rerank_rules():
    validate_rerank("q", ["a"], 1)
    assert violations(lambda: validate_rerank("", [])) == ["query", "passages"]
    assert violations(lambda: validate_rerank("q", ["a", " ", ""], 0)) == ["passages[1]", "passages[2]", "top_n"]
    assert violations(lambda: validate_rerank("q", ["a"] * (MAX_PASSAGES + 1))) == ["passages"]


# -- downstream errors -----------------------------------------------------------------------------------------------


def rpc_error(error: LoragError) -> grpc.aio.AioRpcError:
    """The AioRpcError a client sees when a lorag service raises ``error`` (same trailers as the interceptor)."""
    status = rpc_status.to_status(error.to_status())
    return grpc.aio.AioRpcError(
        status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata), status.details, None
    )


def test_invalid_argument_passes_through_with_details_and_renamed_fields():
    sent = InvalidArgument(
        message="filter.field: unknown field 'metadata.yeer'",
        reason="UNKNOWN_FILTER_FIELD",
        metadata={"collection": "Docs"},
        violations=[FieldViolation("filter.field", "unknown field"), FieldViolation("limit", "too big")],
    )
    got = error_from_rpc(rpc_error(sent), dependency="indexer", field_map=prefix_fields({"filter": "options.filter"}))
    assert isinstance(got, InvalidArgument) and got.code == grpc.StatusCode.INVALID_ARGUMENT
    assert got.reason == "UNKNOWN_FILTER_FIELD" and got.metadata == {"collection": "Docs"}
    assert got.message == "options.filter.field: unknown field 'metadata.yeer'"
    assert got.violations == [
        FieldViolation("options.filter.field", "unknown field"),
        FieldViolation("limit", "too big"),
    ]
    unchanged = error_from_rpc(rpc_error(sent), dependency="indexer")
    assert unchanged.message == sent.message and unchanged.violations == sent.violations


def test_not_found_and_resource_exhausted_pass_through():
    got = error_from_rpc(
        rpc_error(NotFound("collection 'X' not found", reason="COLLECTION_NOT_FOUND")), dependency="indexer"
    )
    assert isinstance(got, NotFound) and (got.message, got.reason) == (
        "collection 'X' not found",
        "COLLECTION_NOT_FOUND",
    )
    full = error_from_rpc(rpc_error(ResourceExhausted("queue full", reason="QUEUE_FULL")), dependency="embedding")
    assert isinstance(full, ResourceExhausted) and full.reason == "QUEUE_FULL"


def test_unavailable_names_the_dependency():
    got = error_from_rpc(
        grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "connection refused", None
        ),
        dependency="embedding",
    )
    assert isinstance(got, Unavailable)
    assert got.metadata["dependency"] == "embedding" and "embedding service is unavailable" in got.message


def test_deadline_exceeded_depends_on_whose_deadline_passed():
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(), "late", None
    )
    # A plain client (an application, the CLI): its own timeout ran out.
    assert isinstance(error_from_rpc(error, dependency="indexer"), DeadlineExceeded)
    serving = serving_call.set(True)  # inside a service serving a call without a deadline
    try:
        timeout = error_from_rpc(error, dependency="indexer")
        assert isinstance(timeout, Unavailable) and timeout.reason == "DEPENDENCY_TIMEOUT"
        token = current_deadline.set(0.0)  # the caller's deadline: long gone
        try:
            assert isinstance(error_from_rpc(error, dependency="indexer"), DeadlineExceeded)
        finally:
            current_deadline.reset(token)
    finally:
        serving_call.reset(serving)


def test_other_codes_keep_their_code_and_name_the_dependency():
    error = grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), "boom", None)
    got = error_from_rpc(error, dependency="indexer")
    assert got.code == grpc.StatusCode.INTERNAL and "indexer" in got.message and got.reason == "DEPENDENCY_FAILED"


def test_prefix_fields():
    rename = prefix_fields({"filter": "options.filter", "texts[0]": "query"})
    assert rename("filter") == "options.filter"
    assert rename("filter.composite.filters[1]") == "options.filter.composite.filters[1]"
    assert rename("filters") == "filters"
    assert rename("texts[0]") == "query"
    assert rename("texts[1]") == "texts[1]"
