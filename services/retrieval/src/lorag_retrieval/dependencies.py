"""The two lorag services retrieval calls, as the pipeline sees them: the embedding service and the indexer.

Each wraps a chassis channel (``lorag_core.clients.create_channel``: deadline propagation, OpenTelemetry client
spans, retries on UNAVAILABLE for these idempotent reads) and turns a failed call into a lorag error with
:func:`lorag_core.downstream.error_from_rpc`. Neither is contacted at start: a dependency that is down makes
the calls that need it fail (or degrade), not the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import grpc
import numpy as np

from lorag.embedding.v1 import embedding_service_pb2 as embedding_pb
from lorag.embedding.v1 import embedding_service_pb2_grpc as embedding_grpc
from lorag.indexer.v1 import indexer_service_pb2 as indexer_pb
from lorag.indexer.v1 import indexer_service_pb2_grpc as indexer_grpc
from lorag_core.clients import create_channel
from lorag_core.downstream import FieldMap, error_from_rpc

EMBEDDING_SERVICE = embedding_pb.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
INDEXER_SERVICE = indexer_pb.DESCRIPTOR.services_by_name["IndexerService"].full_name

_INPUT_TYPES = {"query": embedding_pb.INPUT_TYPE_QUERY, "document": embedding_pb.INPUT_TYPE_DOCUMENT}

#: Texts per Embed call when the service's Info reports no limit.
DEFAULT_EMBED_BATCH = 128


@dataclass
class Encoded:
    """Vectors for a list of texts (rows in input order), the model that made them and the tokens it read."""

    vectors: np.ndarray  # float32 [n, dimensions]
    model: str
    tokens: int = 0


class EmbeddingService:
    """``Embed`` on the embedding service; long lists are split into calls the service accepts, sent concurrently."""

    dependency = "embedding"

    def __init__(self, target: str, *, timeout: float = 10.0, channel: grpc.aio.Channel | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self._owns_channel = channel is None
        self.channel = channel or create_channel(target, retry_services=[EMBEDDING_SERVICE])
        self._stub = embedding_grpc.EmbeddingServiceStub(self.channel)
        self._batch: int | None = None

    async def encode(
        self,
        texts: Sequence[str],
        input_type: Literal["query", "document"] = "document",
        *,
        truncate: bool = True,
        field_map: FieldMap | None = None,
    ) -> Encoded:
        """Embed ``texts``; errors name field ``texts[i]`` of the whole list unless ``field_map`` renames them."""
        batch = await self._batch_size() if len(texts) > 1 else 1  # the service's limit, read once from Info
        slices = [list(texts[i : i + batch]) for i in range(0, len(texts), batch)]
        responses = await asyncio.gather(
            *(
                self._embed(part, input_type, truncate, offset, field_map)
                for offset, part in zip(range(0, len(texts), batch), slices, strict=True)
            )
        )
        vectors = [np.asarray([e.values for e in r.embeddings], dtype=np.float32) for r in responses]
        matrix = np.concatenate(vectors, axis=0) if vectors else np.zeros((0, 0), dtype=np.float32)
        return Encoded(
            vectors=matrix,
            model=responses[0].model if responses else "",
            tokens=sum(int(r.usage.prompt_tokens) for r in responses),
        )

    async def _embed(
        self, texts: list[str], input_type: str, truncate: bool, offset: int, field_map: FieldMap | None
    ) -> embedding_pb.EmbedResponse:
        request = embedding_pb.EmbedRequest(texts=texts, input_type=_INPUT_TYPES[input_type], truncate=truncate)
        try:
            return await self._stub.Embed(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, dependency=self.dependency, field_map=_shifted(offset, field_map)) from exc

    async def _batch_size(self) -> int:
        if self._batch is None:
            try:
                info = await self._stub.Info(embedding_pb.InfoRequest(), timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                raise error_from_rpc(exc, dependency=self.dependency) from exc
            self._batch = max(1, int(info.max_client_batch_size) or DEFAULT_EMBED_BATCH)
        return self._batch

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()


class IndexerService:
    """``Search`` on the indexer service."""

    dependency = "indexer"

    def __init__(self, target: str, *, timeout: float = 10.0, channel: grpc.aio.Channel | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self._owns_channel = channel is None
        self.channel = channel or create_channel(target, retry_services=[INDEXER_SERVICE])
        self._stub = indexer_grpc.IndexerServiceStub(self.channel)

    async def search(
        self, request: indexer_pb.SearchRequest, *, field_map: FieldMap | None = None
    ) -> indexer_pb.SearchResponse:
        try:
            return await self._stub.Search(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc, dependency=self.dependency, field_map=field_map) from exc

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()


def _shifted(offset: int, field_map: FieldMap | None) -> FieldMap | None:
    """Violations name ``texts[i]`` of one slice; shift ``i`` by the slice's offset, then apply ``field_map``."""
    if offset == 0:
        return field_map

    def rename(field: str) -> str:
        if field.startswith("texts[") and "]" in field:
            index, rest = field[len("texts[") :].split("]", 1)
            if index.isdigit():
                field = f"texts[{int(index) + offset}]{rest}"
        return field_map(field) if field_map is not None else field

    return rename


__all__ = ["EMBEDDING_SERVICE", "INDEXER_SERVICE", "EmbeddingService", "Encoded", "IndexerService"]
