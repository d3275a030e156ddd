"""Session fixtures shared by every test tier: one real Weaviate, models from local packages only (no hub)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from lorag_cli.stack.weaviate import WeaviateServer  # noqa: E402


@pytest.fixture(scope="session")
def weaviate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeaviateServer]:
    """One real Weaviate for the session, on free ports with a throwaway data dir.

    Use `weaviate.host`, `.http_port`, `.grpc_port` (or `.lorag_env()` for a service's environment).
    """
    root = tmp_path_factory.mktemp("weaviate")
    with WeaviateServer(root / "data", log_path=root / "weaviate.log") as server:
        yield server
