"""lorag's Python SDK: typed asyncio clients for each service, over the generated gRPC stubs.

from lorag_client import GatewayClient, document
async with GatewayClient() as gateway:           # 127.0.0.1:50051 unless LORAG_GATEWAY_ADDRESS says otherwise
    async for event in gateway.ingest([document(tenant="acme", collection="docs", text="...")]):
        print(event)
    found = await gateway.retrieve("what is lorag?", collection="docs", tenant="acme", top_k=3)
"""

from lorag_client.base import ServiceClient
from lorag_client.embedding import EmbeddingClient
from lorag_client.endpoints import DEFAULT_PORTS, address
from lorag_client.gateway import Answer, AskDelta, Citation, GatewayClient, document
from lorag_client.generation import GenerationClient
from lorag_client.indexer import IndexerClient
from lorag_client.retrieval import RetrievalClient, retrieval_options
from lorag_client.sampling import sampling_params
from lorag_client.training import TrainingClient
from lorag_core.clients import ChannelSecurity
from lorag_core.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LoragError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

#: The client of each service, by its short name.
CLIENTS: dict[str, type[ServiceClient]] = {
    "gateway": GatewayClient,
    "embedding": EmbeddingClient,
    "indexer": IndexerClient,
    "retrieval": RetrievalClient,
    "generation": GenerationClient,
    "training": TrainingClient,
}

__all__ = [
    "CLIENTS",
    "DEFAULT_PORTS",
    "AlreadyExists",
    "Answer",
    "AskDelta",
    "ChannelSecurity",
    "Citation",
    "DeadlineExceeded",
    "EmbeddingClient",
    "FailedPrecondition",
    "FieldViolation",
    "GatewayClient",
    "GenerationClient",
    "IndexerClient",
    "InvalidArgument",
    "LoragError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "RetrievalClient",
    "ServiceClient",
    "TrainingClient",
    "Unauthenticated",
    "Unavailable",
    "address",
    "document",
    "retrieval_options",
    "sampling_params",
]
