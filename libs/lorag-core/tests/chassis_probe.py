"""The probe service the chassis tests run: the probe contract, an in-memory span exporter, a server on port 0."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lorag_core import errors
from lorag_core.clients import create_channel
from lorag_core.config import ServiceSettings
from lorag_core.interceptors import remaining_time
from lorag_core.server import ServiceApp
from lorag_core.telemetry import setup_telemetry

sys.path.insert(0, str(Path(__file__).parent / "protos"))
probe_pb2, probe_pb2_grpc = grpc.protos_and_services("lorag_probe/probe.proto")

SPANS = InMemorySpanExporter()
setup_telemetry("chassis-tests", span_processors=(SimpleSpanProcessor(SPANS),))

PROBE = probe_pb2.DESCRIPTOR.services_by_name["ProbeService"]


class Probe(probe_pb2_grpc.ProbeServiceServicer):  # type: ignore[name-defined]  # built at import by protos_and_services
    """A servicer whose only job is to exercise the chassis: it sleeps, fails and calls downstream on request."""

    async def Echo(self, request, context):
        import asyncio

        if request.sleep_ms:
            await asyncio.sleep(request.sleep_ms / 1000)
        failures = {
            "invalid": errors.InvalidArgument.of("text", "must not be 'bad'"),
            "not_found": errors.NotFound("collection 'x' not found", reason="COLLECTION_NOT_FOUND"),
            "exhausted": errors.ResourceExhausted("queue full", metadata={"max_queue": "8"}),
        }
        if request.fail_with == "crash":
            raise RuntimeError("a bug")
        if request.fail_with:
            raise failures[request.fail_with]
        if request.downstream:
            async with create_channel(request.downstream) as channel:
                stub = probe_pb2_grpc.ProbeServiceStub(channel)
                return await stub.Echo(probe_pb2.EchoRequest(text=request.text))
        remaining = remaining_time()
        return probe_pb2.EchoResponse(text=request.text, deadline_remaining_s=-1 if remaining is None else remaining)

    async def EchoStream(self, request, context):
        for i in range(3):
            if request.fail_with and i == 1:
                raise errors.InvalidArgument.of("text", "fails mid-stream")
            yield probe_pb2.EchoResponse(text=f"{request.text}{i}")


async def start_probe(name: str = "probe", **settings) -> ServiceApp:
    app = ServiceApp(name, ServiceSettings(port=0, grace_seconds=5, **settings))
    app.add_service(PROBE, probe_pb2_grpc.add_ProbeServiceServicer_to_server, Probe())
    await app.start()
    await app.set_serving()
    return app
