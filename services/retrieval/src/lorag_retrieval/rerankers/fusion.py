"""The default reranker, ``fusion``: no model of its own, measured better than no reranking on SciFact.

It scores each candidate with three signals and fuses them by relative score (each min-max normalised to [0, 1],
then a weighted sum; weights 0.3 / 0.4 / 0.3 by default):

1. **first stage** — the search score the candidate came with (hybrid, vector or BM25 score). For the ``Rerank``
   RPC, which has no search scores, the cosine similarity of the whole passage to the query stands in for it.
2. **sentence MaxP** — the passage is split into sentences (a title line counts as one), each is embedded with
   the embedding service's bi-encoder, and the best sentence's cosine similarity to the query is the passage's
   score (Dai and Callan's MaxP, here with a bi-encoder). A long passage whose one relevant sentence is diluted in
   the whole-passage vector moves up.
3. **BM25 over the candidates** — exact word matches, with document frequencies taken from the candidates
   (:func:`lorag_retrieval.rerankers.text.bm25`).

The model it uses is the embedding service's, called over gRPC like any other dependency, so the retrieval
service needs no torch. Sentence vectors are kept in an LRU cache (``sentence_cache`` entries), so passages that
come back often are embedded once. Cost: one Embed call for the query and the uncached sentences of the candidates,
about as many tokens as the candidates themselves — similar to a cross-encoder of the same size.

Measured on SciFact train (809 queries, all-MiniLM-L6-v2, top 50 candidates; ``benchmarks/rerank_choice.py``,
figures in ``docs/retrieval.md``), it was the best of the cheap options tried, over a dense and over a hybrid first
stage alike. A trained cross-encoder (``cross-encoder`` or ``tei``) is still the recommendation for production.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from lorag_core.downstream import FieldMap
from lorag_retrieval.encoder import Encoded
from lorag_retrieval.rerankers.base import RerankScores
from lorag_retrieval.rerankers.text import bm25, sentences
from lorag_retrieval.score_fusion import weighted_sum


class TextEncoder(Protocol):
    """What the fusion reranker needs from an embedding model: the embedding service's client, or (in the
    benchmark) an in-process model with the same behaviour."""

    async def encode(
        self,
        texts: Sequence[str],
        input_type: Literal["query", "document"] = "document",
        *,
        truncate: bool = True,
        field_map: FieldMap | None = None,
    ) -> Encoded: ...


@dataclass(frozen=True)
class FusionWeights:
    """The weight of each signal in the relative-score fusion; a zero weight skips the signal's work."""

    first_stage: float = 0.3
    maxp: float = 0.4
    bm25: float = 0.3

    def __post_init__(self) -> None:
        values = (self.first_stage, self.maxp, self.bm25)
        if any(w < 0 for w in values) or sum(values) <= 0:
            raise ValueError(f"fusion weights must be non-negative and not all zero, got {values}")


class FusionReranker:
    """Reranks by fusing the first-stage score, sentence-level MaxP through ``encoder`` and BM25 (see module doc)."""

    name = "fusion"

    def __init__(
        self,
        encoder: TextEncoder,
        *,
        weights: FusionWeights | None = None,
        sentence_cache: int = 20000,
        max_sentences: int = 64,
    ) -> None:
        if sentence_cache < 0:
            raise ValueError(f"sentence_cache must be non-negative, got {sentence_cache}")
        if max_sentences < 1:
            raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
        self._encoder = encoder
        self.weights = weights or FusionWeights()
        self._cache_size = sentence_cache
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_model = ""
        self._max_sentences = max_sentences
        self._encoder_model = ""

    @property
    def model(self) -> str:
        signals = [name for name, w in (("bm25", self.weights.bm25), ("maxp", self.weights.maxp)) if w > 0]
        parts = "+".join(signals) or "first-stage"
        return f"fusion:{parts}" + (f"({self._encoder_model})" if self._encoder_model and self.weights.maxp else "")

    async def start(self) -> None:
        """Nothing to load: the model is the embedding service's, called per request."""

    async def close(self) -> None:
        self._cache.clear()

    async def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        truncate: bool = True,
        first_stage: Sequence[float] | None = None,
    ) -> RerankScores:
        started = time.perf_counter_ns()
        texts = list(passages)
        w = self.weights
        signals: list[list[float]] = []
        weights: list[float] = []
        tokens = 0
        inference_ns = 0

        need_dense = w.maxp > 0 or (w.first_stage > 0 and first_stage is None)
        if need_dense:
            inference_started = time.perf_counter_ns()
            maxp, whole, tokens = await self._dense_signals(query, texts, truncate, whole=first_stage is None)
            inference_ns = time.perf_counter_ns() - inference_started
            if w.maxp > 0:
                signals.append(maxp)
                weights.append(w.maxp)
            if first_stage is None and w.first_stage > 0:
                signals.append(whole)
                weights.append(w.first_stage)
        if first_stage is not None and w.first_stage > 0:
            if len(first_stage) != len(texts):
                raise ValueError(f"{len(first_stage)} first-stage scores for {len(texts)} passages")
            signals.append([float(s) for s in first_stage])
            weights.append(w.first_stage)
        if w.bm25 > 0:
            signals.append(bm25(query, texts))
            weights.append(w.bm25)

        scores = weighted_sum(signals, weights)
        total = time.perf_counter_ns() - started
        return RerankScores(
            scores=scores,
            model=self.model,
            prompt_tokens=tokens,
            queue_ns=max(total - inference_ns, 0),
            inference_ns=inference_ns,
        )

    # -- dense signals ---------------------------------------------------------------------------------------------

    def _split(self, passage: str) -> list[str]:
        """The passage's sentences, merged into at most ``max_sentences`` groups (a list-like text can have
        hundreds of "sentences")."""
        parts = sentences(passage) or [passage]
        if len(parts) <= self._max_sentences:
            return parts
        size = -(-len(parts) // self._max_sentences)
        return [" ".join(parts[i : i + size]) for i in range(0, len(parts), size)]

    async def _dense_signals(
        self, query: str, passages: list[str], truncate: bool, *, whole: bool
    ) -> tuple[list[float], list[float], int]:
        """(MaxP per passage, whole-passage cosine per passage or [], tokens read)."""
        split = [self._split(p) for p in passages]
        owner_of: dict[str, int] = {}
        owner: list[int] = []  # for each text sent: the passage it belongs to
        pending: list[str] = []
        # Vectors known before the await: another call may evict them from the cache meanwhile.
        known: dict[str, np.ndarray] = {}
        for index, parts in enumerate(split):
            for sentence in parts:
                if sentence in known:
                    continue
                if sentence in self._cache:
                    known[sentence] = self._cache_get(sentence)
                elif sentence not in owner_of:
                    owner_of[sentence] = index
                    pending.append(sentence)
                    owner.append(index)

        def to_passages(field: str) -> str:
            if field.startswith("texts[") and "]" in field:
                position, rest = field[len("texts[") :].split("]", 1)
                if position.isdigit() and int(position) < len(owner):
                    return f"passages[{owner[int(position)]}]{rest}"
            return "passages"

        calls = [self._encoder.encode([query], "query", truncate=truncate, field_map=lambda f: "query")]
        if pending:
            calls.append(self._encoder.encode(pending, "document", truncate=truncate, field_map=to_passages))
        if whole:
            calls.append(
                self._encoder.encode(
                    passages, "document", truncate=True, field_map=lambda f: f.replace("texts", "passages", 1)
                )
            )
        cache_model = self._cache_model
        results: list[Encoded] = list(await asyncio.gather(*calls))
        query_encoded = results[0]
        self._remember_model(query_encoded.model)
        if known and query_encoded.model != cache_model:  # cached vectors came from another model: redo them
            stale = list(known)
            redone = await self._encoder.encode(stale, "document", truncate=True)
            known = dict(zip(stale, redone.vectors, strict=True))
            results.append(redone)
        q = _unit(query_encoded.vectors[0])
        fresh = dict(zip(pending, results[1].vectors, strict=True)) if pending else {}
        if query_encoded.model == self._cache_model:
            self._store(fresh)
        known.update(fresh)

        maxp = []
        for parts in split:
            vectors = np.stack([known[s] for s in parts])
            maxp.append(float(np.max(_unit_rows(vectors) @ q)))
        whole_scores: list[float] = []
        if whole:
            whole_scores = (_unit_rows(results[1 + bool(pending)].vectors) @ q).astype(float).tolist()
        return maxp, whole_scores, sum(r.tokens for r in results)

    # -- cache -------------------------------------------------------------------------------------------------------

    def _remember_model(self, model: str) -> None:
        if model and model != self._cache_model:  # another embedding model: cached vectors no longer compare
            self._cache.clear()
            self._cache_model = model
        self._encoder_model = model or self._encoder_model

    def _cache_get(self, sentence: str) -> np.ndarray:
        vector = self._cache[sentence]
        self._cache.move_to_end(sentence)
        return vector

    def _store(self, fresh: dict[str, np.ndarray]) -> None:
        if self._cache_size == 0:
            return
        for sentence, vector in fresh.items():
            self._cache[sentence] = vector
            self._cache.move_to_end(sentence)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


__all__ = ["FusionReranker", "FusionWeights", "TextEncoder"]
