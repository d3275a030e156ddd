"""The EmbeddingService handlers: proto in, domain call, proto out. The work is in ``backends/``."""

from __future__ import annotations

import time

import grpc
from opentelemetry import trace

from lorag.common.v1 import common_pb2
from lorag.embedding.v1 import embedding_service_pb2 as pb
from lorag.embedding.v1 import embedding_service_pb2_grpc as pb_grpc
from lorag_embedding.backends.base import Embedder, InputType

_INPUT_TYPES = {
    pb.INPUT_TYPE_UNSPECIFIED: InputType.DOCUMENT,
    pb.INPUT_TYPE_DOCUMENT: InputType.DOCUMENT,
    pb.INPUT_TYPE_QUERY: InputType.QUERY,
}


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    """Serves Embed and Info from one :class:`Embedder` (local or TEI)."""

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        started = time.perf_counter_ns()
        truncate = request.truncate if request.HasField("truncate") else True
        input_type = _INPUT_TYPES.get(request.input_type, InputType.DOCUMENT)
        result = await self._embedder.embed(list(request.texts), input_type, truncate)
        info = self._embedder.info
        tokens = sum(result.token_counts)
        span = trace.get_current_span()
        span.set_attribute("lorag.embedding.texts", len(request.texts))
        span.set_attribute("lorag.embedding.tokens", tokens)
        span.set_attribute("lorag.embedding.model", info.model_id)
        embeddings = [
            pb.Embedding(values=vector, token_count=count, truncated=cut)
            for vector, count, cut in zip(result.vectors.tolist(), result.token_counts, result.truncated, strict=True)
        ]
        return pb.EmbedResponse(
            embeddings=embeddings,
            model=info.model_id,
            usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
            timing=common_pb2.Timing(
                queue_ns=result.queue_ns,
                inference_ns=result.inference_ns,
                total_ns=time.perf_counter_ns() - started,
            ),
        )

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        info = self._embedder.info
        return pb.InfoResponse(
            model=info.model_id,
            backend=info.backend,
            dimensions=info.dimensions,
            max_input_tokens=info.max_input_tokens,
            max_client_batch_size=info.max_client_batch_size,
            max_batch_tokens=info.max_batch_tokens,
            normalized=info.normalized,
            prompts=info.prompts,
        )
