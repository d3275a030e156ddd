"""Where the indexer looks for Weaviate, from the stack-wide LORAG_WEAVIATE_* variables."""

from __future__ import annotations

import pytest

from lorag_indexer.config import IndexerSettings

pytestmark = pytest.mark.unit


def test_grpc_uses_the_http_host_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAG_WEAVIATE_HOST", "weaviate.db")
    monkeypatch.setenv("LORAG_WEAVIATE_GRPC_PORT", "50051")
    settings = IndexerSettings()
    assert settings.weaviate_http_url == "http://weaviate.db:8079"
    assert settings.weaviate_grpc_address == "weaviate.db:50051"

    monkeypatch.setenv("LORAG_WEAVIATE_GRPC_HOST", "weaviate-grpc.db")
    settings = IndexerSettings()
    assert settings.weaviate_http_url == "http://weaviate.db:8079"  # REST stays on the main host
    assert settings.weaviate_grpc_address == "weaviate-grpc.db:50051"
