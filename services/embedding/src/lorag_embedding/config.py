"""Embedding service settings, from ``LORAG_EMBEDDING_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from lorag_core.config import ServiceSettings


class EmbeddingSettings(ServiceSettings):
    """How the embedding service serves; every field is ``LORAG_EMBEDDING_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LORAG_EMBEDDING_", extra="ignore", frozen=True)

    port: int = Field(50052, ge=0, le=65535)
    backend: Literal["local", "tei"] = Field("local", description="local: sentence-transformers in process; tei.")
    model: str | None = Field(
        None, description="Model folder or Hugging Face id (local); default: the packaged all-MiniLM-L6-v2."
    )
    device: str | None = Field(None, description="torch device for the local backend (cpu, cuda, cuda:1); auto.")
    torch_threads: int | None = Field(None, ge=1, description="CPU threads for the local model; torch's default.")
    tei_url: str | None = Field(None, description="Base URL of a Text Embeddings Inference server (backend=tei).")
    tei_timeout_seconds: float = Field(30.0, gt=0, description="Per-request timeout towards TEI.")
    max_batch_tokens: int = Field(16384, ge=1, description="Token budget of one model batch (local).")
    max_batch_size: int = Field(256, ge=1, description="Most texts in one model batch (local).")
    max_client_batch_size: int = Field(256, ge=1, description="Most texts one Embed request may carry.")
    max_queue_texts: int = Field(4096, ge=1, description="Texts waiting for a batch before RESOURCE_EXHAUSTED.")
    inference_batch_size: int = Field(32, ge=1, description="Forward-pass size inside one dynamic batch (local).")

    @model_validator(mode="after")
    def _backend_needs(self) -> EmbeddingSettings:
        if self.backend == "tei" and not self.tei_url:
            raise ValueError("LORAG_EMBEDDING_TEI_URL must be set when LORAG_EMBEDDING_BACKEND=tei")
        if self.max_client_batch_size > self.max_queue_texts:
            raise ValueError(
                "LORAG_EMBEDDING_MAX_CLIENT_BATCH_SIZE must not exceed LORAG_EMBEDDING_MAX_QUEUE_TEXTS: "
                "a full request could never be queued"
            )
        return self
