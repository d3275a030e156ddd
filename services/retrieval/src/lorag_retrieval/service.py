"""The RetrievalService handlers: proto in, domain call, proto out. The work is in ``pipeline`` and ``backends/``."""

from __future__ import annotations

import grpc

from lorag.common.v1 import common_pb2
from lorag.retrieval.v1 import retrieval_service_pb2 as pb
from lorag.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from lorag_retrieval.convert import plan_retrieval
from lorag_retrieval.pipeline import Candidate, Retrieval, Retriever


class RetrievalServicer(pb_grpc.RetrievalServiceServicer):
    """Serves Retrieve and Rerank from one :class:`Retriever`."""

    def __init__(self, retriever: Retriever, *, default_alpha: float = 0.5, rerank_by_default: bool = True) -> None:
        self._retriever = retriever
        self._default_alpha = default_alpha
        self._rerank_by_default = rerank_by_default and retriever.reranker is not None

    async def Retrieve(self, request: pb.RetrieveRequest, context: grpc.aio.ServicerContext) -> pb.RetrieveResponse:
        plan = plan_retrieval(request, default_alpha=self._default_alpha, rerank_by_default=self._rerank_by_default)
        return _retrieve_response(await self._retriever.retrieve(plan))

    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> pb.RerankResponse:
        top_n = request.top_n if request.HasField("top_n") else None
        truncate = request.truncate if request.HasField("truncate") else True
        ranked = await self._retriever.rerank(request.query, list(request.passages), top_n, truncate)
        tokens = ranked.scores.prompt_tokens
        return pb.RerankResponse(
            results=[pb.RerankResult(index=index, score=score) for index, score in ranked.results],
            model=ranked.scores.model,
            usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
            timing=common_pb2.Timing(
                queue_ns=ranked.scores.queue_ns,
                inference_ns=ranked.scores.inference_ns,
                total_ns=ranked.total_ns,
            ),
        )


def _scored(candidate: Candidate) -> common_pb2.ScoredChunk:
    scored = common_pb2.ScoredChunk(
        chunk=candidate.chunk,
        score=candidate.score,
        first_stage_score=candidate.first_stage_score,
        first_stage_rank=candidate.first_stage_rank,
    )
    if candidate.rerank_score is not None:
        scored.rerank_score = candidate.rerank_score
    if candidate.distance is not None:
        scored.distance = candidate.distance
    return scored


def _retrieve_response(result: Retrieval) -> pb.RetrieveResponse:
    return pb.RetrieveResponse(
        chunks=[_scored(c) for c in result.chunks],
        reranked=result.reranked,
        mmr_applied=result.mmr_applied,
        degraded=result.degraded,
        degradations=[common_pb2.Degradation(stage=stage, reason=reason) for stage, reason in result.degradations],
        candidate_count=result.candidate_count,
        embedding_model=result.embedding_model,
        reranker_model=result.reranker_model,
        timing=common_pb2.RetrievalTiming(
            embed_ns=result.embed_ns,
            search_ns=result.search_ns,
            rerank_ns=result.rerank_ns,
            mmr_ns=result.mmr_ns,
            total_ns=result.total_ns,
        ),
    )
