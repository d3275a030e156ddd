"""Retrieval metrics against hand-computed values, and BEIR file reading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lorag_cli.beir import (
    distinct_documents,
    evaluate,
    iter_corpus,
    load_qrels,
    load_queries,
    mrr_at,
    ndcg_at,
    recall_at,
)

pytestmark = pytest.mark.unit


def test_ndcg_matches_a_hand_computation():
    relevant = {"a": 1, "b": 1}
    assert ndcg_at(["a", "b", "c"], relevant, 10) == pytest.approx(1.0)
    # one relevant at rank 2 of two relevant: (1/log2(3)) / (1 + 1/log2(3))
    expected = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at(["x", "a", "y"], relevant, 10) == pytest.approx(expected)
    assert ndcg_at(["x"] * 10 + ["a"], relevant, 10) == 0.0
    graded = {"a": 2, "b": 1}
    assert ndcg_at(["b", "a"], graded, 10) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_recall_and_mrr():
    relevant = {"a": 1, "b": 1, "z": 0}
    assert recall_at(["a", "c"], relevant, 100) == 0.5
    assert recall_at(["c", "z"], relevant, 100) == 0.0
    assert mrr_at(["c", "d", "b"], relevant, 10) == pytest.approx(1 / 3)
    assert mrr_at(["c"] * 10 + ["a"], relevant, 10) == 0.0


def test_chunks_collapse_to_documents_at_their_best_place():
    assert distinct_documents(["d1", "d2", "d1", "d3", "d2"]) == ["d1", "d2", "d3"]


def test_evaluate_averages_over_judged_queries_only():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    scores = evaluate({"q1": ["a"], "q2": ["x", "b"]}, qrels)
    assert scores["mrr_at_10"] == pytest.approx((1 + 0.5) / 2)
    assert scores["recall_at_100"] == 1.0


def test_reads_a_beir_folder(tmp_path: Path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "body", "metadata": {}}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "question?", "metadata": {}}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    assert [(d.id, d.title, d.text) for d in iter_corpus(tmp_path)] == [("d1", "T", "body")]
    assert load_queries(tmp_path) == {"q1": "question?"}
    assert load_qrels(tmp_path, "test") == {"q1": {"d1": 1}}
    with pytest.raises(FileNotFoundError, match="available: test"):
        load_qrels(tmp_path, "dev")
