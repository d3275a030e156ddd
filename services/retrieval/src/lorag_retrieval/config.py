"""Retrieval service settings, from ``LORAG_RETRIEVAL_*`` environment variables.

The downstream services are found the way every lorag client finds them (``lorag_client.endpoints.address``):
``LORAG_EMBEDDING_HOST`` / ``LORAG_EMBEDDING_PORT`` (default 127.0.0.1:50052) and ``LORAG_INDEXER_HOST`` /
``LORAG_INDEXER_PORT`` (default 127.0.0.1:50053), or ``LORAG_<SVC>_ADDRESS``; ``embedding_address`` and
``indexer_address`` below override both.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from lorag_core.config import ServiceSettings

#: The reranker names ``LORAG_RETRIEVAL_RERANKER`` accepts.
RerankerName = Literal["fusion", "cross-encoder", "tei", "none"]


class RetrievalSettings(ServiceSettings):
    """How the retrieval service serves; every field is ``LORAG_RETRIEVAL_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LORAG_RETRIEVAL_", extra="ignore", frozen=True)

    port: int = Field(50054, ge=0, le=65535)

    # -- downstream services --------------------------------------------------------------------------------------
    embedding_address: str | None = Field(
        None, description="host:port of the embedding service; default from LORAG_EMBEDDING_HOST/PORT."
    )
    indexer_address: str | None = Field(
        None, description="host:port of the indexer service; default from LORAG_INDEXER_HOST/PORT."
    )
    embedding_timeout_seconds: float = Field(10.0, gt=0, description="Per-call timeout towards the embedding service.")
    search_timeout_seconds: float = Field(10.0, gt=0, description="Per-call timeout towards the indexer's Search.")

    # -- search defaults ------------------------------------------------------------------------------------------
    default_alpha: float = Field(0.5, ge=0, le=1, description="Hybrid alpha when a request leaves it unset.")

    # -- reranker -------------------------------------------------------------------------------------------------
    reranker: RerankerName = Field(
        "fusion",
        description=(
            "fusion: BM25 over the candidates + sentence-level MaxP through the embedding service, fused with the "
            "search order (no model of its own, no torch); cross-encoder: a sentence-transformers CrossEncoder in "
            "process (extra lorag-retrieval[cross-encoder]); tei: a TEI /rerank endpoint; none: no reranking."
        ),
    )
    reranker_model: str | None = Field(
        None, description="cross-encoder: model folder or Hugging Face id (required); tei: the name to report."
    )
    reranker_url: str | None = Field(None, description="tei: base URL of the TEI server (required).")
    reranker_api_key: str | None = Field(None, description="tei: API key sent as a Bearer token.")
    reranker_timeout_seconds: float = Field(
        10.0, gt=0, description="How long Retrieve waits for the reranker before returning the search order, degraded."
    )
    reranker_device: str | None = Field(None, description="cross-encoder: torch device (cpu, cuda); auto.")
    reranker_torch_threads: int | None = Field(None, ge=1, description="cross-encoder: CPU threads for torch.")
    reranker_batch_size: int = Field(32, ge=1, description="cross-encoder: pairs per forward pass.")
    reranker_max_queue_passages: int = Field(
        4096, ge=1, description="cross-encoder: passages waiting to be scored before RESOURCE_EXHAUSTED."
    )
    rerank_by_default: bool = Field(
        True, description="Rerank when a request leaves options.rerank unset (and a reranker is configured)."
    )
    rerank_include_title: bool = Field(
        True, description="Score 'title. text' rather than the chunk text alone when a chunk has a title."
    )
    fusion_first_stage_weight: float = Field(0.3, ge=0, description="fusion: weight of the search score.")
    fusion_maxp_weight: float = Field(
        0.4, ge=0, description="fusion: weight of sentence MaxP (0 skips the embedding calls: BM25 + search only)."
    )
    fusion_bm25_weight: float = Field(0.3, ge=0, description="fusion: weight of BM25 over the candidates.")
    fusion_sentence_cache: int = Field(
        20000, ge=0, description="fusion: sentence vectors kept in an LRU cache (0 disables it)."
    )

    @model_validator(mode="after")
    def _reranker_needs(self) -> RetrievalSettings:
        if self.reranker == "tei" and not self.reranker_url:
            raise ValueError("LORAG_RETRIEVAL_RERANKER_URL must be set when LORAG_RETRIEVAL_RERANKER=tei")
        if self.reranker == "cross-encoder" and not self.reranker_model:
            raise ValueError(
                "LORAG_RETRIEVAL_RERANKER_MODEL must name a CrossEncoder folder or Hugging Face id when "
                "LORAG_RETRIEVAL_RERANKER=cross-encoder (no cross-encoder is bundled)"
            )
        if self.fusion_first_stage_weight + self.fusion_maxp_weight + self.fusion_bm25_weight <= 0:
            raise ValueError("the LORAG_RETRIEVAL_FUSION_*_WEIGHT settings must not all be zero")
        return self


__all__ = ["RerankerName", "RetrievalSettings"]
