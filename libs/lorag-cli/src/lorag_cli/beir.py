"""BEIR-format data and the retrieval metrics lorag reports (the BEIR / pytrec_eval definitions).

A BEIR folder has ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
``qrels/<split>.tsv`` (header ``query-id corpus-id score``). Only queries judged in the split are evaluated.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BeirDocument:
    id: str
    title: str
    text: str


def iter_corpus(folder: Path) -> Iterator[BeirDocument]:
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                yield BeirDocument(str(row["_id"]), row.get("title") or "", row.get("text") or "")


def load_queries(folder: Path) -> dict[str, str]:
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        return {str(row["_id"]): row["text"] for row in map(json.loads, filter(str.strip, handle))}


def load_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    """``{query id: {document id: relevance}}`` for the split (relevance 0 rows are kept but never count)."""
    path = folder / "qrels" / f"{split}.tsv"
    if not path.exists():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise FileNotFoundError(
            f"no qrels for split {split!r} in {folder}; available: {', '.join(available) or 'none'}"
        )
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader, None)  # header
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def ndcg_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Normalised discounted cumulative gain over the first ``k`` results (graded relevance, log2 discount)."""
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevant.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    wanted = {doc for doc, r in relevant.items() if r > 0}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def mrr_at(ranked: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if relevant.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def distinct_documents(document_ids: Sequence[str]) -> list[str]:
    """Chunk hits → documents in rank order, each at its best chunk's place."""
    return list(dict.fromkeys(document_ids))


def evaluate(runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Mean nDCG@10, recall@100 and MRR@10 over the judged queries (a query with no run scores zero)."""
    judged = [q for q in qrels if any(r > 0 for r in qrels[q].values())]
    if not judged:
        return {"ndcg_at_10": 0.0, "recall_at_100": 0.0, "mrr_at_10": 0.0}
    totals = {"ndcg_at_10": 0.0, "recall_at_100": 0.0, "mrr_at_10": 0.0}
    for query in judged:
        ranked, relevant = runs.get(query, []), qrels[query]
        totals["ndcg_at_10"] += ndcg_at(ranked, relevant, 10)
        totals["recall_at_100"] += recall_at(ranked, relevant, 100)
        totals["mrr_at_10"] += mrr_at(ranked, relevant, 10)
    return {name: round(total / len(judged), 4) for name, total in totals.items()}
