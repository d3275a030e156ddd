"""The retrieval pipeline: embed the query → search the index → rerank → MMR → top_k.

Each stage is a span (``retrieval.embed``, ``retrieval.search``, ``retrieval.rerank``, ``retrieval.mmr``) with the
attributes ``lorag.tenant``, ``lorag.collection``, ``lorag.retrieval.mode`` and ``lorag.retrieval.k`` (the number of
items the stage handles) — never the query or any passage text. The downstream calls inside them are child spans
of their own (the chassis' client interceptor), so a trace shows retrieval → embedding and retrieval → indexer.

What fails how (the contract in ``retrieval_service.proto``):

* embedding down in **vector** mode → ``Unavailable`` naming the embedding service; in **hybrid** mode the search
  falls back to keyword only and the result says so (``Degradation(EMBED, ...)``); **keyword** mode never embeds;
* indexer down → ``Unavailable`` naming the indexer; its NOT_FOUND and INVALID_ARGUMENT pass through, with field
  paths renamed to the RetrieveRequest's (``filter...`` → ``options.filter...``);
* reranker down, slow (``reranker_timeout_seconds``) or absent when asked for → the search order, with
  ``Degradation(RERANK, ...)``; the call still succeeds;
* MMR needs the candidates' vectors: the indexer returns them (``include_vectors``); if some are missing they are
  embedded through the embedding service, and if that fails MMR is skipped with ``Degradation(MMR, ...)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2 as indexer_pb
from lorag_client import IndexerClient
from lorag_core.downstream import prefix_fields, renamed_fields
from lorag_core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LoragError,
    ResourceExhausted,
    Unavailable,
)
from lorag_core.interceptors import remaining_time
from lorag_core.telemetry import get_logger
from lorag_retrieval.convert import MODE_NAMES, RetrievalPlan
from lorag_retrieval.encoder import Encoder
from lorag_retrieval.mmr import mmr
from lorag_retrieval.rerankers.base import Reranker, RerankScores, validate_rerank

log = get_logger(__name__)

STAGE_EMBED = common_pb2.RETRIEVAL_STAGE_EMBED
STAGE_SEARCH = common_pb2.RETRIEVAL_STAGE_SEARCH
STAGE_RERANK = common_pb2.RETRIEVAL_STAGE_RERANK
STAGE_MMR = common_pb2.RETRIEVAL_STAGE_MMR

# Violations of the indexer's SearchRequest, renamed to the RetrieveRequest fields the caller set.
_SEARCH_FIELDS = prefix_fields(
    {
        "filter": "options.filter",
        "alpha": "options.alpha",
        "fusion": "options.fusion",
        "mode": "options.mode",
        "limit": "options.candidate_count",
        "query_text": "query",
    }
)
_QUERY_FIELD = prefix_fields({"texts[0]": "query", "texts": "query"})


@dataclass
class Candidate:
    """One first-stage hit on its way through the pipeline."""

    chunk: common_pb2.Chunk
    first_stage_score: float
    first_stage_rank: int
    distance: float | None = None
    vector: np.ndarray | None = None
    rerank_score: float | None = None

    @property
    def score(self) -> float:
        """The score results are ordered by: the rerank score when reranked, else the first-stage score."""
        return self.rerank_score if self.rerank_score is not None else self.first_stage_score


@dataclass
class Retrieval:
    """The outcome of one retrieval: the chosen chunks, best first, and how they were obtained."""

    chunks: list[Candidate]
    candidate_count: int
    reranked: bool = False
    mmr_applied: bool = False
    degradations: list[tuple[common_pb2.RetrievalStage.ValueType, str]] = field(default_factory=list)
    embedding_model: str = ""
    reranker_model: str = ""
    embed_ns: int = 0
    search_ns: int = 0
    rerank_ns: int = 0
    mmr_ns: int = 0
    total_ns: int = 0

    @property
    def degraded(self) -> bool:
        return bool(self.degradations)


@dataclass
class RankedPassages:
    """The Rerank RPC's outcome: ``(index, score)`` best first (ties by index), with the backend's accounting."""

    results: list[tuple[int, float]]
    scores: RerankScores
    total_ns: int


class Retriever:
    """Runs retrievals against the embedding and indexer services, with an optional reranker."""

    def __init__(
        self,
        embeddings: Encoder,
        index: IndexerClient,
        reranker: Reranker | None,
        *,
        tracer: trace.Tracer | None = None,
        reranker_timeout: float = 10.0,
        rerank_include_title: bool = True,
    ) -> None:
        self.embeddings = embeddings
        self.index = index
        self.reranker = reranker
        self._tracer = tracer or trace.get_tracer("lorag.retrieval")
        self._reranker_timeout = reranker_timeout
        self._include_title = rerank_include_title

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the in-process reranker, if any; downstream services are not contacted."""
        if self.reranker is not None:
            await self.reranker.start()

    async def close(self) -> None:
        if self.reranker is not None:
            await self.reranker.close()
        await self.embeddings.close()
        await self.index.close()

    # -- Retrieve ------------------------------------------------------------------------------------------------

    async def retrieve(self, plan: RetrievalPlan) -> Retrieval:
        started = time.perf_counter_ns()
        attributes = {
            "lorag.tenant": plan.tenant,
            "lorag.collection": plan.collection,
            "lorag.retrieval.mode": plan.mode_name,
        }
        result = Retrieval(chunks=[], candidate_count=0)
        mode = plan.mode

        query_vector: list[float] = []
        if mode != common_pb2.SEARCH_MODE_KEYWORD:
            stage_started = time.perf_counter_ns()
            with self._span("retrieval.embed", attributes, k=1) as span:
                try:
                    encoded = await self.embeddings.encode([plan.query], "query", field_map=_QUERY_FIELD)
                    query_vector = encoded.vectors[0].tolist()
                    result.embedding_model = encoded.model
                except (Unavailable, ResourceExhausted) as exc:
                    if mode != common_pb2.SEARCH_MODE_HYBRID:
                        raise
                    mode = common_pb2.SEARCH_MODE_KEYWORD
                    reason = f"embedding unavailable: {exc.message}; keyword search only"
                    result.degradations.append((STAGE_EMBED, reason))
                    _mark_degraded(span, reason)
                    log.warning("hybrid search fell back to keyword", reason=reason)
            result.embed_ns = time.perf_counter_ns() - stage_started

        stage_started = time.perf_counter_ns()
        search_attributes = {**attributes, "lorag.retrieval.mode": MODE_NAMES[mode]}
        with self._span("retrieval.search", search_attributes, k=plan.fetch_count):
            request = indexer_pb.SearchRequest(
                collection=plan.collection,
                tenant=plan.tenant,
                mode=mode,
                limit=plan.fetch_count,
                include_vectors=plan.mmr,
            )
            if mode != common_pb2.SEARCH_MODE_VECTOR:
                request.query_text = plan.query
            if mode != common_pb2.SEARCH_MODE_KEYWORD:
                request.query_vector.extend(query_vector)
            if mode == common_pb2.SEARCH_MODE_HYBRID:
                request.alpha = plan.alpha
                request.fusion = plan.fusion
            if plan.filter is not None:
                request.filter.CopyFrom(plan.filter)
            response = await self._search(request)
        result.search_ns = time.perf_counter_ns() - stage_started

        candidates = [
            Candidate(
                chunk=hit.chunk,
                first_stage_score=float(hit.score),
                first_stage_rank=rank,
                distance=float(hit.distance) if hit.HasField("distance") else None,
                vector=np.asarray(hit.vector, dtype=np.float32) if len(hit.vector) else None,
            )
            for rank, hit in enumerate(response.hits)
        ]
        result.candidate_count = len(candidates)
        ordered = candidates

        if plan.rerank and candidates:
            stage_started = time.perf_counter_ns()
            with self._span("retrieval.rerank", attributes, k=len(candidates)) as span:
                ordered, rerank_problem = await self._rerank_stage(plan.query, candidates, result)
                if rerank_problem:
                    result.degradations.append((STAGE_RERANK, rerank_problem))
                    _mark_degraded(span, rerank_problem)
            result.rerank_ns = time.perf_counter_ns() - stage_started

        if plan.mmr and ordered:
            stage_started = time.perf_counter_ns()
            with self._span("retrieval.mmr", attributes, k=len(ordered)) as span:
                chosen, mmr_problem = await self._mmr_stage(ordered, plan)
                if mmr_problem:
                    result.degradations.append((STAGE_MMR, mmr_problem))
                    _mark_degraded(span, mmr_problem)
                else:
                    ordered = chosen
                    result.mmr_applied = True
            result.mmr_ns = time.perf_counter_ns() - stage_started

        result.chunks = ordered[: plan.top_k]
        result.total_ns = time.perf_counter_ns() - started
        return result

    async def _search(self, request: indexer_pb.SearchRequest) -> indexer_pb.SearchResponse:
        try:
            with renamed_fields(_SEARCH_FIELDS):
                return await self.index.search_request(request)
        except InvalidArgument as exc:
            if any(v.field.startswith("query_vector") for v in exc.violations):
                # Not the caller's mistake: the embedding model and the collection disagree on dimensions.
                raise FailedPrecondition(
                    f"the query embedding does not fit collection {request.collection!r}: {exc.message}",
                    reason="EMBEDDING_DIMENSIONS_MISMATCH",
                    metadata={**exc.metadata, "collection": request.collection},
                ) from exc
            raise

    async def _rerank_stage(
        self, query: str, candidates: list[Candidate], result: Retrieval
    ) -> tuple[list[Candidate], str | None]:
        """Candidates reordered by the reranker, or the search order and the reason it could not be."""
        if self.reranker is None:
            return candidates, "no reranker is configured (LORAG_RETRIEVAL_RERANKER=none); search order returned"
        passages = [self._passage(c.chunk) for c in candidates]
        timeout = self._reranker_timeout
        left = remaining_time()
        if left is not None:
            if left <= 0:
                raise DeadlineExceeded("the caller's deadline passed before reranking")
            timeout = min(timeout, left)
        try:
            async with asyncio.timeout(timeout):
                scores = await self.reranker.rerank(
                    query, passages, truncate=True, first_stage=[c.first_stage_score for c in candidates]
                )
            if len(scores.scores) != len(candidates):
                raise Unavailable(f"the reranker returned {len(scores.scores)} scores for {len(candidates)} passages")
        except TimeoutError:
            return candidates, f"reranker did not answer within {timeout:.3g} s; search order returned"
        except LoragError as exc:
            return candidates, f"reranker unavailable: {exc.message}; search order returned"
        except Exception as exc:
            log.exception("reranker failed", error=repr(exc))
            return candidates, f"reranker failed: {type(exc).__name__}: {exc}; search order returned"
        for candidate, score in zip(candidates, scores.scores, strict=True):
            candidate.rerank_score = float(score)
        result.reranked = True
        result.reranker_model = scores.model
        ordered = sorted(candidates, key=lambda c: (-(c.rerank_score or 0.0), c.first_stage_rank))
        return ordered, None

    async def _mmr_stage(self, ordered: list[Candidate], plan: RetrievalPlan) -> tuple[list[Candidate], str | None]:
        missing = [i for i, c in enumerate(ordered) if c.vector is None or c.vector.size == 0]
        if missing:
            try:
                encoded = await self.embeddings.encode([self._passage(ordered[i].chunk) for i in missing], "document")
            except LoragError as exc:
                return ordered, f"candidate vectors unavailable ({exc.message}); MMR skipped"
            for row, i in enumerate(missing):
                ordered[i].vector = encoded.vectors[row]
        dims = {c.vector.shape[0] for c in ordered if c.vector is not None}
        if len(dims) != 1:
            return ordered, f"candidate vectors have different lengths {sorted(dims)}; MMR skipped"
        vectors = np.stack([c.vector for c in ordered if c.vector is not None])
        chosen = mmr([c.score for c in ordered], vectors, plan.top_k, plan.mmr_lambda)
        return [ordered[i] for i in chosen], None

    def _passage(self, chunk: common_pb2.Chunk) -> str:
        """What a reranker reads for a chunk: its text, after its document's title when it has one."""
        if self._include_title and chunk.title.strip():
            return f"{chunk.title.strip()}\n{chunk.text}"
        return chunk.text

    # -- Rerank --------------------------------------------------------------------------------------------------

    async def rerank(self, query: str, passages: Sequence[str], top_n: int | None, truncate: bool) -> RankedPassages:
        """The Rerank RPC: validate, score with the configured reranker, order best first, keep ``top_n``."""
        started = time.perf_counter_ns()
        validate_rerank(query, passages, top_n)
        if self.reranker is None:
            raise FailedPrecondition(
                "no reranker is configured; set LORAG_RETRIEVAL_RERANKER to fusion, cross-encoder or tei",
                reason="NO_RERANKER",
            )
        left = remaining_time()  # an HTTP or in-process reranker knows nothing of gRPC deadlines: bound it here
        with self._span("retrieval.rerank", {}, k=len(passages)):
            deadline = asyncio.timeout(max(left, 0.0) if left is not None else None)
            try:
                async with deadline:
                    scores = await self.reranker.rerank(query, list(passages), truncate=truncate)
            except TimeoutError:
                if deadline.expired():
                    raise DeadlineExceeded("the caller's deadline passed while reranking") from None
                raise
        if len(scores.scores) != len(passages):
            raise Unavailable(f"the reranker returned {len(scores.scores)} scores for {len(passages)} passages")
        ranked = sorted(enumerate(scores.scores), key=lambda pair: (-pair[1], pair[0]))
        if top_n is not None:
            ranked = ranked[:top_n]
        return RankedPassages(results=ranked, scores=scores, total_ns=time.perf_counter_ns() - started)

    # -- spans ---------------------------------------------------------------------------------------------------

    def _span(self, name: str, attributes: dict[str, str], *, k: int) -> AbstractContextManager[trace.Span]:
        return self._tracer.start_as_current_span(name, attributes={**attributes, "lorag.retrieval.k": k})


def _mark_degraded(span: trace.Span, reason: str) -> None:
    span.set_attribute("lorag.retrieval.degraded", True)
    span.add_event("degraded", {"reason": reason})


__all__ = ["Candidate", "RankedPassages", "Retrieval", "Retriever"]
