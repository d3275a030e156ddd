"""The gRPC server every lorag service runs: one place for health, reflection, interceptors and shutdown.

A service builds a :class:`ServiceApp`, registers its servicer, and calls :func:`serve` with a ``startup``
coroutine that loads its models or opens its connections. Health is NOT_SERVING from the moment the port is
bound until ``startup`` returns, SERVING after, and NOT_SERVING again as soon as SIGTERM arrives; calls in
flight then get ``grace_seconds`` to finish before the server stops.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from lorag_core.config import ConfigError, ServiceSettings
from lorag_core.interceptors import DeadlineInterceptor, ErrorInterceptor, ObservabilityInterceptor, is_infrastructure
from lorag_core.reflection import add_reflection
from lorag_core.telemetry import Telemetry, get_logger, setup_telemetry, shutdown_telemetry

log = get_logger("lorag.server")

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def _traced(call_details: Any) -> bool:
    return not is_infrastructure(call_details.method)


class ServiceApp:
    """A grpc.aio server wired with lorag's chassis; ``name`` is the service's short name (``embedding``)."""

    def __init__(self, name: str, settings: ServiceSettings, telemetry: Telemetry | None = None) -> None:
        self.name = name
        self.settings = settings
        self.telemetry = telemetry or setup_telemetry(
            name, log_level=settings.log_level, metrics_port=settings.metrics_port
        )
        self.health = HealthServicer()
        self._service_names: list[str] = []
        self._stopping: asyncio.Event | None = None
        self.port: int | None = None
        options = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(
            interceptors=[
                aio_server_interceptor(filter_=_traced),  # type: ignore[no-untyped-call]  # OpenTelemetry is untyped
                ObservabilityInterceptor(name, self.telemetry.meter),
                DeadlineInterceptor(),
                ErrorInterceptor(),
            ],
            options=options,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )

    def add_service(
        self, descriptor: ServiceDescriptor, register: Callable[[Any, grpc.aio.Server], None], servicer: Any
    ) -> None:
        """Register a servicer (``register`` is the generated ``add_XServicer_to_server``)."""
        register(servicer, self.server)
        self._service_names.append(descriptor.full_name)

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> int:
        """Bind and start serving health (NOT_SERVING) and reflection; return the bound port."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        add_reflection(self.server, [*self._service_names, HEALTH_SERVICE])
        for service in ["", *self._service_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        bind = f"{self.settings.host}:{self.settings.port}"
        self.port = self.server.add_insecure_port(bind)
        if self.port == 0:
            raise ConfigError(f"cannot bind {bind}: the port is in use or the address is invalid")
        await self.server.start()
        self._stopping = asyncio.Event()
        log.info("listening", address=self.address, services=self._service_names)
        return self.port

    async def set_serving(self) -> None:
        """Mark every service SERVING: called once models and connections are ready."""
        for service in ["", *self._service_names]:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", address=self.address)

    async def stop(self, grace: float | None = None) -> None:
        """Go NOT_SERVING, refuse new calls, let calls in flight finish within the grace, then stop."""
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("stopping", grace_seconds=grace)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._stopping is not None:
            self._stopping.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT start a graceful stop."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(self.stop()))

    async def wait_for_termination(self) -> None:
        """Return once :meth:`stop` has completed."""
        assert self._stopping is not None, "start() first"
        await self._stopping.wait()


async def serve(
    app: ServiceApp,
    startup: Callable[[], Awaitable[None]] | None = None,
    shutdown: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run ``app`` until SIGTERM: bind, run ``startup`` while NOT_SERVING, serve, then ``shutdown``."""
    app.install_signal_handlers()
    await app.start()
    try:
        if startup is not None:
            await startup()
        await app.set_serving()
        await app.wait_for_termination()
    finally:
        if shutdown is not None:
            await shutdown()
        shutdown_telemetry()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Entry point for a service's ``__main__``: run ``main`` and turn config errors into a clear exit."""
    # OpenMP threads (torch on CPU) spin while idle by default; beside gRPC threads, other services or a container
    # CPU limit, that spinning starves them (measured here: 8 concurrent single-text embeds 9-14/s spinning,
    # 79-81/s passive). Set before torch loads; an explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        asyncio.run(main())
    except ConfigError as exc:
        print(f"lorag: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
