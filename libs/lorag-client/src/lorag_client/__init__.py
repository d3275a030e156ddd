"""lorag's Python SDK: typed asyncio clients for each service, over the generated gRPC stubs.

    from lorag_client import GatewayClient, document
    async with GatewayClient() as gateway:           # 127.0.0.1:50051 unless LORAG_GATEWAY_ADDRESS says otherwise
        async for event in gateway.ingest([document(tenant="acme", collection="docs", text="...")]):
            print(event)
        found = await gateway.retrieve("what is lorag?", collection="docs", tenant="acme", top_k=3)
"""

from lorag_client.embedding import EmbeddingClient
from lorag_client.endpoints import DEFAULT_PORTS, address
from lorag_client.gateway import Answer, AskDelta, Citation, GatewayClient, document
from lorag_client.generation import GenerationClient
from lorag_client.indexer import IndexerClient
from lorag_client.retrieval import RetrievalClient, retrieval_options
from lorag_client.sampling import sampling_params
from lorag_client.training import TrainingClient

__all__ = [
    "Answer",
    "AskDelta",
    "Citation",
    "DEFAULT_PORTS",
    "EmbeddingClient",
    "GatewayClient",
    "GenerationClient",
    "IndexerClient",
    "RetrievalClient",
    "TrainingClient",
    "address",
    "document",
    "retrieval_options",
    "sampling_params",
]
