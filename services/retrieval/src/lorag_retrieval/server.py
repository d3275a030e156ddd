"""Wires the downstream clients and the reranker chosen by configuration into the lorag chassis."""

from __future__ import annotations

from lorag.retrieval.v1 import retrieval_service_pb2 as pb
from lorag.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from lorag_client import EmbeddingClient, IndexerClient, address
from lorag_core.server import ServiceApp
from lorag_retrieval.config import RetrievalSettings
from lorag_retrieval.encoder import Encoder
from lorag_retrieval.pipeline import Retriever
from lorag_retrieval.rerankers.base import Reranker
from lorag_retrieval.service import RetrievalServicer

SERVICE = pb.DESCRIPTOR.services_by_name["RetrievalService"]


def build_reranker(settings: RetrievalSettings, embeddings: Encoder) -> Reranker | None:
    """The reranker named by ``settings.reranker`` (``None`` for ``none``); nothing is loaded until ``start()``."""
    if settings.reranker == "none":
        return None
    if settings.reranker == "tei":
        from lorag_retrieval.rerankers.tei import TEIReranker

        return TEIReranker(
            settings.reranker_url or "",  # never empty: the settings validator requires it for tei
            model=settings.reranker_model,
            api_key=settings.reranker_api_key,
            timeout=settings.reranker_timeout_seconds,
        )
    if settings.reranker == "cross-encoder":
        from lorag_retrieval.rerankers.cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker(
            settings.reranker_model or "",  # never empty: the settings validator requires it for cross-encoder
            device=settings.reranker_device,
            torch_threads=settings.reranker_torch_threads,
            batch_size=settings.reranker_batch_size,
            max_queue_passages=settings.reranker_max_queue_passages,
        )
    from lorag_retrieval.rerankers.fusion import FusionReranker, FusionWeights

    weights = FusionWeights(
        first_stage=settings.fusion_first_stage_weight,
        maxp=settings.fusion_maxp_weight,
        bm25=settings.fusion_bm25_weight,
    )
    return FusionReranker(embeddings, weights=weights, sentence_cache=settings.fusion_sentence_cache)


def create_app(settings: RetrievalSettings) -> tuple[ServiceApp, Retriever]:
    """The retrieval service, not yet started: run it with ``lorag_core.server.serve(app, retriever.start, ...)``.

    Neither downstream service is contacted here or in ``start()``: the service is SERVING once its own reranker
    is loaded, and a dependency that is down fails (or degrades) the calls that need it.
    """
    app = ServiceApp("retrieval", settings)
    embeddings = Encoder(
        EmbeddingClient(settings.embedding_address or address("embedding"), timeout=settings.embedding_timeout_seconds)
    )
    index = IndexerClient(settings.indexer_address or address("indexer"), timeout=settings.search_timeout_seconds)
    reranker = build_reranker(settings, embeddings)
    retriever = Retriever(
        embeddings,
        index,
        reranker,
        tracer=app.telemetry.tracer,
        reranker_timeout=settings.reranker_timeout_seconds,
        rerank_include_title=settings.rerank_include_title,
    )
    servicer = RetrievalServicer(
        retriever, default_alpha=settings.default_alpha, rerank_by_default=settings.rerank_by_default
    )
    app.add_service(SERVICE, pb_grpc.add_RetrievalServiceServicer_to_server, servicer)
    return app, retriever
