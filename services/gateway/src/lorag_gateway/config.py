"""Gateway settings, from ``LORAG_GATEWAY_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from lorag_core.config import ServiceSettings
from lorag_gateway.ingest.parsing import DEFAULT_MAX_BYTES


class GatewaySettings(ServiceSettings):
    """How the gateway serves; every field is ``LORAG_GATEWAY_<FIELD>``.

    The services it calls are found with ``LORAG_<SVC>_ADDRESS`` or ``LORAG_<SVC>_HOST``/``_PORT``
    (see ``lorag_client.endpoints``), as everywhere in lorag.
    """

    model_config = SettingsConfigDict(env_prefix="LORAG_GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(50051, ge=0, le=65535)
    tokenizer: str | None = Field(
        None,
        description="Tokenizer for chunking (tokenizer.json, a model folder or a Hugging Face id); it must be the "
        "embedding model's. Default: the packaged all-MiniLM-L6-v2.",
    )
    embedding_address: str | None = Field(None, description="host:port of the embedding service; overrides env.")
    indexer_address: str | None = Field(None, description="host:port of the indexer service; overrides env.")
    retrieval_address: str | None = Field(None, description="host:port of the retrieval service; overrides env.")
    generation_address: str | None = Field(None, description="host:port of the generation service; overrides env.")
    max_document_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1, description="Largest document accepted by ingest.")
    ingest_concurrency: int = Field(8, ge=1, description="Documents of one ingest stream processed at once.")
    embed_batch_size: int = Field(64, ge=1, description="Chunks per Embed call while ingesting.")
    prepare_threads: int = Field(2, ge=1, description="Threads that parse and chunk documents off the event loop.")
    downstream_timeout_seconds: float = Field(120.0, gt=0, description="Timeout of each call to another service.")
