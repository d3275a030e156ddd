"""Wires the generation backend chosen by configuration, the adapter manager and the servicer into the chassis."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from lorag.generation.v1 import generation_service_pb2 as pb
from lorag.generation.v1 import generation_service_pb2_grpc as pb_grpc
from lorag_core.server import ServiceApp
from lorag_generation.adapters import AdapterManager, AdapterRegistry, TrainingServiceRegistry
from lorag_generation.backends.base import GenerationBackend
from lorag_generation.config import GenerationSettings
from lorag_generation.service import GenerationMetrics, GenerationServicer

SERVICE = pb.DESCRIPTOR.services_by_name["GenerationService"]


class Generation:
    """What ``serve`` starts and stops besides the server: the backend (model or remote) and the adapter manager."""

    def __init__(self, backend: GenerationBackend, adapters: AdapterManager) -> None:
        self.backend = backend
        self.adapters = adapters

    async def start(self) -> None:
        await self.backend.start()
        await self.adapters.start()

    async def close(self) -> None:
        await self.adapters.close()
        await self.backend.close()


def build_backend(settings: GenerationSettings, instruments: GenerationMetrics) -> GenerationBackend:
    """The backend named by ``settings.backend``."""
    if settings.backend == "openai":
        from lorag_generation.backends.openai import OpenAIBackend

        assert settings.openai_base_url, "GenerationSettings requires it with backend=openai"
        return OpenAIBackend(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.model,
            timeout=settings.openai_timeout_seconds,
            max_new_tokens_limit=settings.max_new_tokens_limit,
            max_loaded_adapters=settings.max_loaded_adapters,
        )
    from lorag_generation.backends.transformers import TransformersBackend

    return TransformersBackend(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        torch_threads=settings.torch_threads,
        max_batch_size=settings.max_batch_size,
        max_queue_size=settings.max_queue_size,
        max_new_tokens_limit=settings.max_new_tokens_limit,
        max_context_tokens=settings.max_context_tokens,
        max_loaded_adapters=settings.max_loaded_adapters,
        max_lora_rank=settings.max_lora_rank,
        on_step=instruments.batch_size.record,
    )


def create_app(
    settings: GenerationSettings, *, registry: AdapterRegistry | None = None
) -> tuple[ServiceApp, Generation]:
    """The generation service, not yet started: ``serve(app, generation.start, generation.close)``.

    ``registry`` overrides the training-service registry that ``LORAG_GENERATION_TRAINING_ADDRESS`` configures.
    """
    app = ServiceApp("generation", settings)
    meter = app.telemetry.meter
    instruments = GenerationMetrics(meter)
    backend = build_backend(settings, instruments)
    if registry is None and settings.training_address:
        registry = TrainingServiceRegistry(settings.training_address)
    adapters = AdapterManager(backend, registry=registry, alias_poll_seconds=settings.alias_poll_seconds)

    def queue_depth(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(getattr(backend, "queue_depth", 0))

    def active_adapters(_options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(adapters.resident_count)

    meter.create_observable_gauge(
        "lorag.generation.queue.depth",
        callbacks=[queue_depth],
        unit="{request}",
        description="Requests waiting for a decode slot.",
    )
    meter.create_observable_gauge(
        "lorag.generation.adapters.active",
        callbacks=[active_adapters],
        unit="{adapter}",
        description="Adapters resident.",
    )
    app.add_service(
        SERVICE, pb_grpc.add_GenerationServiceServicer_to_server, GenerationServicer(backend, adapters, instruments)
    )
    return app, Generation(backend, adapters)
