"""Client for the embedding service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from lorag.embedding.v1 import embedding_service_pb2 as pb
from lorag.embedding.v1 import embedding_service_pb2_grpc as pb_grpc
from lorag_client.base import ServiceClient

_INPUT_TYPES = {"query": pb.INPUT_TYPE_QUERY, "document": pb.INPUT_TYPE_DOCUMENT}


class EmbeddingClient(ServiceClient):
    """Embed texts through the embedding service (``Embed`` and ``Info`` are safe to retry)."""

    service = "embedding"
    service_name = pb.DESCRIPTOR.services_by_name["EmbeddingService"].full_name

    def _make_stub(self) -> pb_grpc.EmbeddingServiceStub:
        return pb_grpc.EmbeddingServiceStub(self.channel)

    async def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: Literal["query", "document"] = "document",
        truncate: bool = True,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        """One vector per text, in order; see ``EmbedResponse`` for token counts and timing."""
        request = pb.EmbedRequest(texts=list(texts), input_type=_INPUT_TYPES[input_type], truncate=truncate)
        return await self.stub.Embed(request, timeout=self._timeout(timeout))

    async def embed_vectors(self, texts: Sequence[str], **kwargs: object) -> list[list[float]]:
        """Just the vectors, as lists of floats."""
        response = await self.embed(texts, **kwargs)  # type: ignore[arg-type]
        return [list(e.values) for e in response.embeddings]

    async def info(self, *, timeout: float | None = None) -> pb.InfoResponse:
        """The model, its dimensions and the service's limits."""
        return await self.stub.Info(pb.InfoRequest(), timeout=self._timeout(timeout))
