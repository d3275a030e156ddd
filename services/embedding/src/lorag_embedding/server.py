"""Wires the embedding backend chosen by configuration into the lorag chassis."""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry.metrics import CallbackOptions, Observation

from lorag.embedding.v1 import embedding_service_pb2 as pb
from lorag.embedding.v1 import embedding_service_pb2_grpc as pb_grpc
from lorag_core.server import ServiceApp
from lorag_embedding.backends.base import Embedder
from lorag_embedding.config import EmbeddingSettings
from lorag_embedding.service import EmbeddingServicer

SERVICE = pb.DESCRIPTOR.services_by_name["EmbeddingService"]


def build_embedder(settings: EmbeddingSettings, app: ServiceApp) -> Embedder:
    """The backend named by ``settings.backend``, reporting batch metrics through the app's meter."""
    if settings.backend == "tei":
        from lorag_embedding.backends.tei import TEIEmbedder

        assert settings.tei_url, "the settings refuse backend=tei without tei_url"
        return TEIEmbedder(
            settings.tei_url,
            model_id=settings.model,
            max_client_batch_size=settings.max_client_batch_size,
            timeout=settings.tei_timeout_seconds,
        )
    from lorag_embedding.backends.local import LocalEmbedder

    meter = app.telemetry.meter
    batch_texts = meter.create_histogram("lorag.embedding.batch.size", unit="{text}", description="Texts per batch.")
    batch_tokens = meter.create_histogram(
        "lorag.embedding.batch.tokens", unit="{token}", description="Tokens per batch."
    )
    batch_seconds = meter.create_histogram(
        "lorag.embedding.batch.duration", unit="s", description="Inference per batch."
    )

    def on_batch(size: int, tokens: int, inference_ns: int) -> None:
        batch_texts.record(size)
        batch_tokens.record(tokens)
        batch_seconds.record(inference_ns / 1e9)

    embedder = LocalEmbedder(
        settings.model,
        device=settings.device,
        torch_threads=settings.torch_threads,
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_size=settings.max_batch_size,
        max_client_batch_size=settings.max_client_batch_size,
        max_queue_texts=settings.max_queue_texts,
        inference_batch_size=settings.inference_batch_size,
        on_batch=on_batch,
    )

    def queue_depth(_options: CallbackOptions) -> Iterator[Observation]:
        batcher = embedder.batcher
        yield Observation(batcher.queue_depth if batcher is not None else 0)

    meter.create_observable_gauge(
        "lorag.embedding.queue.depth", callbacks=[queue_depth], unit="{text}", description="Texts waiting for a batch."
    )
    return embedder


def create_app(settings: EmbeddingSettings) -> tuple[ServiceApp, Embedder]:
    """The embedding service, not yet started: run it with ``lorag_core.server.serve(app, embedder.start, ...)``."""
    app = ServiceApp("embedding", settings)
    embedder = build_embedder(settings, app)
    app.add_service(SERVICE, pb_grpc.add_EmbeddingServiceServicer_to_server, EmbeddingServicer(embedder))
    return app, embedder
