"""lorag's Python SDK: typed asyncio clients for each service, over the generated gRPC stubs.

    from lorag_client import EmbeddingClient
    async with EmbeddingClient() as client:          # 127.0.0.1:50052 unless LORAG_EMBEDDING_ADDRESS says otherwise
        vectors = await client.embed_vectors(["hello"])
"""

from lorag_client.embedding import EmbeddingClient
from lorag_client.endpoints import DEFAULT_PORTS, address
from lorag_client.indexer import IndexerClient

__all__ = ["DEFAULT_PORTS", "EmbeddingClient", "IndexerClient", "address"]
