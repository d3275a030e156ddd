"""lorag's Python SDK: typed asyncio clients for each service, over the generated gRPC stubs.

    from lorag_client import GatewayClient, document
    async with GatewayClient() as gateway:           # 127.0.0.1:50051 unless LORAG_GATEWAY_ADDRESS says otherwise
        async for event in gateway.ingest([document(tenant="acme", collection="docs", text="...")]):
            print(event)
        found = await gateway.retrieve("what is lorag?", collection="docs", tenant="acme", top_k=3)
"""

from lorag_client.embedding import EmbeddingClient
from lorag_client.endpoints import DEFAULT_PORTS, address
from lorag_client.gateway import GatewayClient, document
from lorag_client.indexer import IndexerClient
from lorag_client.retrieval import RetrievalClient, retrieval_options

__all__ = [
    "DEFAULT_PORTS",
    "EmbeddingClient",
    "GatewayClient",
    "IndexerClient",
    "RetrievalClient",
    "address",
    "document",
    "retrieval_options",
]
