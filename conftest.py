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


@pytest.fixture(scope="session")
async def lorag_services(weaviate: WeaviateServer):
    """Embedding, indexer, retrieval and gateway, each a real gRPC server on port 0 in this process, on the
    session's Weaviate: the whole stack on loopback, with the embedding model loaded once.

    Yields ``{service name: "host:port"}``.
    """
    from lorag_embedding.config import EmbeddingSettings
    from lorag_embedding.server import create_app as create_embedding
    from lorag_gateway.config import GatewaySettings
    from lorag_gateway.server import Gateway
    from lorag_indexer.config import IndexerSettings
    from lorag_indexer.server import create_app as create_indexer
    from lorag_retrieval.config import RetrievalSettings
    from lorag_retrieval.server import create_app as create_retrieval

    started = []

    async def launch(app, startup=None, shutdown=None):  # type: ignore[no-untyped-def]
        await app.start()
        if startup is not None:
            await startup()
        await app.set_serving()
        started.append((app, shutdown))
        return app.address

    embedding_app, embedder = create_embedding(EmbeddingSettings(port=0))
    addresses = {"embedding": await launch(embedding_app, embedder.start, embedder.close)}
    indexer_app, store = create_indexer(
        IndexerSettings(
            port=0, weaviate_host=weaviate.host, weaviate_http_port=weaviate.http_port, weaviate_grpc_port=weaviate.grpc_port
        )
    )
    addresses["indexer"] = await launch(indexer_app, store.start, store.close)
    retrieval_app, retriever = create_retrieval(
        RetrievalSettings(port=0, embedding_address=addresses["embedding"], indexer_address=addresses["indexer"])
    )
    addresses["retrieval"] = await launch(retrieval_app, retriever.start, retriever.close)
    gateway = Gateway(
        GatewaySettings(
            port=0,
            embedding_address=addresses["embedding"],
            indexer_address=addresses["indexer"],
            retrieval_address=addresses["retrieval"],
        )
    )
    addresses["gateway"] = await launch(gateway.app, None, gateway.close)
    yield addresses
    for app, shutdown in reversed(started):
        await app.stop(0)
        if shutdown is not None:
            await shutdown()
