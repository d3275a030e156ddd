"""Indexer service settings, from ``LORAG_INDEXER_*`` (the service) and ``LORAG_WEAVIATE_*`` (where Weaviate is).

Weaviate's location uses the stack-wide names (``LORAG_WEAVIATE_HOST``, ``..._HTTP_PORT``, ``..._GRPC_PORT``,
``..._API_KEY``, ``..._SECURE``) because ``lorag up`` and the test fixtures hand those to every service; they are
read through pydantic validation aliases, and may also be passed by field name (``weaviate_host=...``) in code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from lorag_core.config import ServiceSettings

ConsistencyLevel = Literal["ONE", "QUORUM", "ALL"]


class IndexerSettings(ServiceSettings):
    """How the indexer serves and reaches Weaviate; see docs/indexer.md for the table of variables."""

    model_config = SettingsConfigDict(env_prefix="LORAG_INDEXER_", extra="ignore", frozen=True, populate_by_name=True)

    port: int = Field(50053, ge=0, le=65535)

    # -- where Weaviate is (stack-wide names) --------------------------------------------------------------------
    weaviate_host: str = Field(
        "127.0.0.1",
        min_length=1,
        validation_alias="LORAG_WEAVIATE_HOST",
        description="Weaviate host (HTTP, and gRPC too).",
    )
    weaviate_grpc_host: str | None = Field(
        None,
        validation_alias="LORAG_WEAVIATE_GRPC_HOST",
        description="Weaviate's gRPC host when it differs (e.g. the official chart's weaviate-grpc Service).",
    )
    weaviate_http_port: int = Field(
        8079, ge=1, le=65535, validation_alias="LORAG_WEAVIATE_HTTP_PORT", description="Weaviate REST port."
    )
    weaviate_grpc_port: int = Field(
        50050, ge=1, le=65535, validation_alias="LORAG_WEAVIATE_GRPC_PORT", description="Weaviate gRPC port."
    )
    weaviate_api_key: SecretStr | None = Field(
        None, validation_alias="LORAG_WEAVIATE_API_KEY", description="Sent as a bearer token to Weaviate when set."
    )
    weaviate_secure: bool = Field(
        False, validation_alias="LORAG_WEAVIATE_SECURE", description="TLS towards Weaviate (HTTPS and gRPC over TLS)."
    )

    # -- how Weaviate is used --------------------------------------------------------------------------------------
    query_timeout_seconds: float = Field(30.0, gt=0, description="Longest wait for one Weaviate read.")
    write_timeout_seconds: float = Field(60.0, gt=0, description="Longest wait for one Weaviate write request.")
    connect_timeout_seconds: float = Field(
        0.0, ge=0, description="How long startup waits for Weaviate before exiting; 0 waits for ever (NOT_SERVING)."
    )
    health_interval_seconds: float = Field(
        2.0, gt=0, description="How often Weaviate is probed; an outage is noticed within about this long."
    )
    probe_timeout_seconds: float = Field(2.0, gt=0, description="Timeout of one readiness probe of Weaviate.")
    batch_size: int = Field(200, ge=1, le=1000, description="Objects per Weaviate batch request within an upsert.")
    write_attempts: int = Field(4, ge=1, le=20, description="Tries per Weaviate write (first try included).")
    write_backoff_seconds: float = Field(0.1, ge=0, description="Wait before the first retry; doubles per retry.")
    write_backoff_max_seconds: float = Field(2.0, ge=0, description="Longest wait between two write tries.")
    consistency_level: ConsistencyLevel = Field(
        "QUORUM", description="Replica acknowledgements Weaviate waits for on writes and reads (multi-node)."
    )
    schema_cache_seconds: float = Field(
        10.0, ge=0, description="How long a collection's schema is reused before it is read again from Weaviate."
    )
    max_query_results: int = Field(
        10000, ge=1, description="Weaviate's QUERY_MAXIMUM_RESULTS: the most objects one delete request removes."
    )

    # -- defaults for CreateCollection (the values the contract states) -------------------------------------------
    hnsw_ef: int = Field(-1, ge=-1, le=10000, description="Default query-time ef; -1 is Weaviate's dynamic ef.")
    hnsw_ef_construction: int = Field(128, ge=4, le=4096, description="Default ef_construction.")
    hnsw_max_connections: int = Field(32, ge=4, le=2048, description="Default max_connections.")
    bm25_k1: float = Field(1.2, gt=0, le=100, description="Default BM25 k1.")
    bm25_b: float = Field(0.75, ge=0, le=1, description="Default BM25 b.")

    @model_validator(mode="after")
    def _consistent(self) -> IndexerSettings:
        if self.hnsw_ef == 0:
            raise ValueError("LORAG_INDEXER_HNSW_EF must be -1 (dynamic) or from 1 to 10000")
        if self.write_backoff_max_seconds < self.write_backoff_seconds:
            raise ValueError(
                "LORAG_INDEXER_WRITE_BACKOFF_MAX_SECONDS must not be below LORAG_INDEXER_WRITE_BACKOFF_SECONDS"
            )
        return self

    @property
    def weaviate_http_url(self) -> str:
        scheme = "https" if self.weaviate_secure else "http"
        return f"{scheme}://{self.weaviate_host}:{self.weaviate_http_port}"

    @property
    def weaviate_grpc_hostname(self) -> str:
        return self.weaviate_grpc_host or self.weaviate_host

    @property
    def weaviate_grpc_address(self) -> str:
        return f"{self.weaviate_grpc_hostname}:{self.weaviate_grpc_port}"
