"""Client for the embedding service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Literal

from lorag.embedding.v1 import embedding_service_pb2 as pb
from lorag.embedding.v1 import embedding_service_pb2_grpc as pb_grpc
from lorag_client.base import ServiceClient
from lorag_core.downstream import renamed_fields

_INPUT_TYPES = {"query": pb.INPUT_TYPE_QUERY, "document": pb.INPUT_TYPE_DOCUMENT}

#: Texts per Embed call when the service's Info reports no limit.
DEFAULT_BATCH = 128

InputType = Literal["query", "document"]


def _shift_texts(offset: int) -> Callable[[str], str]:
    """Violations of one slice name ``texts[i]``; the whole list's index is ``i + offset``."""

    def rename(field: str) -> str:
        if field.startswith("texts[") and "]" in field:
            index, rest = field[len("texts[") :].split("]", 1)
            if index.isdigit():
                return f"texts[{int(index) + offset}]{rest}"
        return field

    return rename


class EmbeddingClient(ServiceClient):
    """Embed texts through the embedding service (``Embed`` and ``Info`` are safe to retry)."""

    service = "embedding"
    descriptor = pb.DESCRIPTOR.services_by_name["EmbeddingService"]

    _stub: pb_grpc.EmbeddingServiceAsyncStub

    def _make_stub(self) -> pb_grpc.EmbeddingServiceAsyncStub:
        return pb_grpc.EmbeddingServiceStub(self.channel)

    _batch: int | None = None

    async def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        truncate: bool = True,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        """One vector per text, in order; see ``EmbedResponse`` for token counts and timing."""
        request = pb.EmbedRequest(texts=list(texts), input_type=_INPUT_TYPES[input_type], truncate=truncate)
        return await self._unary(self._stub.Embed, request, timeout=timeout)

    async def embed_all(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        truncate: bool = True,
        timeout: float | None = None,
    ) -> pb.EmbedResponse:
        """Like :meth:`embed` for a list of any length: split into calls the service accepts (its
        ``max_client_batch_size``, read once from ``Info``), sent concurrently, joined in order. Field violations
        name ``texts[i]`` of the whole list; usage is summed; timing is the first call's."""
        if len(texts) <= 1:
            return await self.embed(texts, input_type=input_type, truncate=truncate, timeout=timeout)
        if self._batch is None:
            info = await self.info(timeout=timeout)
            self._batch = max(1, int(info.max_client_batch_size) or DEFAULT_BATCH)
        size = self._batch

        async def part(offset: int) -> pb.EmbedResponse:
            with renamed_fields(_shift_texts(offset)):
                return await self.embed(
                    texts[offset : offset + size], input_type=input_type, truncate=truncate, timeout=timeout
                )

        responses = await asyncio.gather(*(part(offset) for offset in range(0, len(texts), size)))
        joined = pb.EmbedResponse(model=responses[0].model)
        joined.timing.CopyFrom(responses[0].timing)
        for response in responses:
            joined.embeddings.extend(response.embeddings)
            joined.usage.prompt_tokens += response.usage.prompt_tokens
            joined.usage.total_tokens += response.usage.total_tokens
        return joined

    async def embed_vectors(
        self, texts: Sequence[str], *, input_type: InputType = "document", truncate: bool = True
    ) -> list[list[float]]:
        """Just the vectors, as lists of floats, for a list of any length."""
        response = await self.embed_all(texts, input_type=input_type, truncate=truncate)
        return [list(e.values) for e in response.embeddings]

    async def info(self, *, timeout: float | None = None) -> pb.InfoResponse:
        """The model, its dimensions and the service's limits."""
        return await self._unary(self._stub.Info, pb.InfoRequest(), timeout=timeout)
