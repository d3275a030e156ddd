"""Unit tier: request validation, filter trees (domain and Weaviate), page tokens and distances, without Weaviate."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from functools import partial

import pytest
from weaviate.classes.query import Filter as WeaviateFilter

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag_client.indexer import all_of, any_of, chunk_record, field_filter
from lorag_core.errors import InvalidArgument
from lorag_indexer import convert
from lorag_indexer.backends.weaviate.filters import build_filter
from lorag_indexer.backends.weaviate.search import similarity, vector_distance
from lorag_indexer.domain import (
    AllOf,
    Bm25Settings,
    CollectionInfo,
    Condition,
    Distance,
    FilterOp,
    HnswSettings,
    MetadataType,
)

pytestmark = pytest.mark.unit

INFO = CollectionInfo(
    name="Docs",
    dimensions=2,
    hnsw=HnswSettings(Distance.COSINE, -1, 128, 32),
    bm25=Bm25Settings(1.2, 0.75),
    metadata_fields={"year": MetadataType.INT, "tags": MetadataType.STRING_LIST, "when": MetadataType.TIMESTAMP},
)


def violations(call: Callable[[], object]) -> tuple[str, list[str]]:
    with pytest.raises(InvalidArgument) as failure:
        call()
    return failure.value.reason, [v.field for v in failure.value.violations]


def test_collection_names_are_validated_and_stored_capitalised():
    assert convert.collection_name("docs") == "Docs"
    assert convert.collection_name("a" + "b" * 63) == "A" + "b" * 63
    for bad in ("", "1docs", "_docs", "my-docs", "a" + "b" * 64):
        assert violations(partial(convert.collection_name, bad)) == ("INVALID_NAME", ["name"])


def test_filters_become_domain_trees_without_match_all_operands():
    flt = convert.filter_from_pb(
        all_of(field_filter("title", "==", "T"), any_of(field_filter("metadata.year", ">", 2020), common_pb2.Filter())),
        INFO,
    )
    # OR with an empty (match-all) operand matches everything, so the AND keeps only the title condition.
    assert flt == Condition("title", FilterOp.EQUAL, "T")
    assert convert.filter_from_pb(common_pb2.Filter(), INFO) is None
    tags = convert.filter_from_pb(field_filter("metadata.tags", "contains_any", ["a"]), INFO)
    assert tags == Condition("metadata.tags", FilterOp.CONTAINS_ANY, ["a"])


def test_weaviate_filters_use_the_stored_property_names():
    by = WeaviateFilter.by_property
    assert build_filter(Condition("title", FilterOp.EQUAL, "T")) == by("title_exact").equal("T")
    assert build_filter(Condition("metadata.tags", FilterOp.CONTAINS_ANY, ["a"])) == by("meta_tags").contains_any(["a"])
    assert build_filter(Condition("metadata.draft", FilterOp.IS_NULL, True)) == by("meta_draft").is_none(True)
    both = build_filter(
        AllOf((Condition("document_id", FilterOp.EQUAL, "d"), Condition("chunk_index", FilterOp.LESS_THAN, 3)))
    )
    assert vars(both)["filters"] == [by("document_id").equal("d"), by("chunk_index").less_than(3)]
    assert build_filter(None) is None


def test_filter_errors_name_every_bad_node():
    flt = all_of(
        field_filter("metadata.year", "==", 1.5),
        field_filter("metadata.when", "contains_any", ["x"]),
        field_filter("chunk_index", "like", "1*"),
        field_filter("metadata.unknown", "==", 1),
    )
    reason, fields = violations(lambda: convert.filter_from_pb(flt, INFO))
    assert reason == "FILTER_TYPE_MISMATCH"
    assert fields == [
        "filter.composite.filters[0].field.value",
        "filter.composite.filters[1].field.operator",
        "filter.composite.filters[2].field.operator",
        "filter.composite.filters[3].field.field",
    ]


def test_page_tokens_only_continue_the_listing_that_issued_them():
    token = convert.encode_page_token("documents", "Docs/acme", "doc-9")
    assert convert.decode_page_token(token, "documents", "Docs/acme") == "doc-9"
    assert convert.decode_page_token("", "documents", "Docs/acme") is None
    for kind, scope, bad in (
        ("documents", "Docs/other", token),
        ("tenants", "Docs/acme", token),
        ("documents", "Docs/acme", "!!"),
    ):
        assert violations(partial(convert.decode_page_token, bad, kind, scope))[0] == "INVALID_PAGE_TOKEN"


def test_chunks_are_validated_without_the_schema():
    ok = chunk_record(str(uuid.uuid4()), "d", "text", [0.1, 0.2], metadata={"n": 2**53})
    chunks = convert.chunks_from_pb(pb.UpsertChunksRequest(collection="docs", tenant="t", chunks=[ok]), "Docs", "t")
    assert chunks[0].metadata["n"].type is MetadataType.INT and chunks[0].chunk_id == ok.chunk.chunk_id
    bad = chunk_record(
        str(uuid.uuid4()), "d", "text", [math.nan, 0.0], char_start=5, char_end=2, metadata={"n": 2**53 + 1}
    )
    request = pb.UpsertChunksRequest(collection="docs", tenant="t", chunks=[ok, bad, ok])
    _, fields = violations(lambda: convert.chunks_from_pb(request, "Docs", "t"))
    assert fields == [
        "chunks[1].chunk.char_end",
        "chunks[1].vector",
        "chunks[1].chunk.metadata[n]",
        "chunks[2].chunk.chunk_id",
    ]


def test_stale_replacement_needs_one_hash_per_document():
    a = chunk_record(str(uuid.uuid4()), "d", "x", [1.0, 0.0], content_sha256="a" * 64)
    b = chunk_record(str(uuid.uuid4()), "d", "y", [1.0, 0.0], content_sha256="b" * 64)
    request = pb.UpsertChunksRequest(collection="docs", tenant="t", chunks=[a, b], delete_stale_chunks=True)
    assert violations(lambda: convert.chunks_from_pb(request, "Docs", "t")) == (
        "INCONSISTENT_DOCUMENT_HASH",
        ["chunks[1].chunk.content_sha256"],
    )
    request.delete_stale_chunks = False
    assert len(convert.chunks_from_pb(request, "Docs", "t")) == 2


@pytest.mark.parametrize(
    ("metric", "distance", "score"),
    [
        (Distance.COSINE, 1 - 0.6, 0.6),
        (Distance.DOT, -0.6, 0.6),
        (Distance.L2_SQUARED, 0.8, -0.8),
        (Distance.MANHATTAN, 1.2, -1.2),
        (Distance.HAMMING, 2.0, -2.0),
    ],
)
def test_distances_and_scores_follow_the_metric(metric, distance, score):
    a, b = [1.0, 0.0], [0.6, 0.8]
    assert vector_distance(metric, a, b) == pytest.approx(distance)
    assert similarity(metric, distance) == pytest.approx(score)
