"""Wires the gateway: clients of the internal services, the ingest and ask pipelines and the servicer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from lorag_client import EmbeddingClient, GenerationClient, IndexerClient, RetrievalClient
from lorag_core.server import ServiceApp
from lorag_gateway.ask.pipeline import AskPipeline
from lorag_gateway.config import GatewaySettings
from lorag_gateway.ingest.chunking import Chunker
from lorag_gateway.ingest.pipeline import IngestPipeline
from lorag_gateway.service import GatewayServicer

SERVICE = pb.DESCRIPTOR.services_by_name["GatewayService"]


class Gateway:
    """The gateway's parts, so ``__main__`` and tests build and close them the same way."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.app = ServiceApp("gateway", settings)
        timeout = settings.downstream_timeout_seconds
        self.embedding = EmbeddingClient(settings.embedding_address, timeout=timeout)
        self.indexer = IndexerClient(settings.indexer_address, timeout=timeout)
        self.retrieval = RetrievalClient(settings.retrieval_address, timeout=timeout)
        self.executor = ThreadPoolExecutor(settings.prepare_threads, thread_name_prefix="lorag-ingest-prepare")
        self.chunker = Chunker.from_model(settings.tokenizer)  # a tokenizer file: fast enough to load up front
        pipeline = IngestPipeline(
            self.embedding,
            self.indexer,
            self.chunker,
            self.executor,
            max_document_bytes=self.settings.max_document_bytes,
            embed_batch_size=self.settings.embed_batch_size,
            meter=self.app.telemetry.meter,
        )
        # GenerateStream declares no idempotency in its contract: it is never retried (not repeated silently).
        self.generation = GenerationClient(settings.generation_address, timeout=timeout)
        asker = AskPipeline(self.retrieval, self.generation, meter=self.app.telemetry.meter)
        servicer = GatewayServicer(pipeline, asker, self.indexer, self.retrieval, self.settings.ingest_concurrency)
        self.app.add_service(SERVICE, pb_grpc.add_GatewayServiceServicer_to_server, servicer)

    async def close(self) -> None:
        for client in (self.embedding, self.indexer, self.retrieval, self.generation):
            await client.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
