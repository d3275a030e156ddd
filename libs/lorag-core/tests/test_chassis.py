"""The chassis's promises, each checked against a real grpc.aio server on port 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import grpc
import pytest
from chassis_probe import PROBE, SPANS, probe_pb2, probe_pb2_grpc, start_probe
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from pydantic_settings import SettingsConfigDict

from lorag_core.config import ConfigError, ServiceSettings, load_settings
from lorag_core.server import ServiceApp

ECHO = f"/{PROBE.full_name}/Echo"


def details_of(error: grpc.aio.AioRpcError):
    """Unpack the google.rpc.Status details of a failed call into (ErrorInfo, BadRequest or None)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]  # an AioRpcError has the methods of a Call it reads
    assert status is not None, "the error carries no google.rpc.Status"
    info, bad = error_details_pb2.ErrorInfo(), None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
    return info, bad


async def health_status(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
        return reply.status


# --- health and shutdown ----------------------------------------------------------------------------------------


@pytest.mark.service
async def test_health_is_not_serving_until_ready_then_serving():
    app = ServiceApp("probe", ServiceSettings(port=0))
    app.add_service(PROBE, probe_pb2_grpc.add_ProbeServiceServicer_to_server, __import__("chassis_probe").Probe())
    await app.start()
    try:
        assert await health_status(app.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await health_status(app.address, PROBE.full_name) == health_pb2.HealthCheckResponse.NOT_SERVING
        await app.set_serving()
        assert await health_status(app.address) == health_pb2.HealthCheckResponse.SERVING
        assert await health_status(app.address, PROBE.full_name) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await app.stop(0)


@pytest.mark.service
async def test_sigterm_goes_not_serving_and_lets_in_flight_calls_finish():
    app = await start_probe()
    app.install_signal_handlers()
    loop = asyncio.get_running_loop()
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            stub = probe_pb2_grpc.ProbeServiceStub(channel)
            in_flight = asyncio.ensure_future(stub.Echo(probe_pb2.EchoRequest(text="slow", sleep_ms=800)))
            await asyncio.sleep(0.2)  # the call is now running in the server
            os.kill(os.getpid(), signal.SIGTERM)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            reply = await in_flight  # finishes within the 5 s grace
            assert reply.text == "slow"
            await asyncio.wait_for(app.wait_for_termination(), 10)
        async with grpc.aio.insecure_channel(app.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await probe_pb2_grpc.ProbeServiceStub(channel).Echo(probe_pb2.EchoRequest(text="late"), timeout=2)
            assert refused.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await app.stop(0)


# --- reflection ---------------------------------------------------------------------------------------------------


@pytest.mark.service
async def test_reflection_lists_services_and_resolves_methods_by_full_name(probe):
    def lookups(address: str):
        with grpc.insecure_channel(address) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = db.get_services()
            # Stock Python reflection answers "not found" for a method's full name: ghz and `grpcurl describe` need it.
            method_file = db.FindFileContainingSymbol(f"{PROBE.full_name}.Echo")
            message_file = db.FindFileContainingSymbol("lorag_probe.EchoRequest")
            return services, method_file.name, message_file.name

    services, method_file, message_file = await asyncio.to_thread(lookups, probe.address)
    assert PROBE.full_name in services
    assert "grpc.health.v1.Health" in services
    assert method_file == message_file == "lorag_probe/probe.proto"


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.service
async def test_invalid_argument_carries_field_violations(probe_stub):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await probe_stub.Echo(probe_pb2.EchoRequest(fail_with="invalid"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = details_of(failure.value)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "lorag.dev")
    assert [(v.field, v.description) for v in bad.field_violations] == [("text", "must not be 'bad'")]


@pytest.mark.service
@pytest.mark.parametrize(
    ("kind", "code", "reason"),
    [
        ("not_found", grpc.StatusCode.NOT_FOUND, "COLLECTION_NOT_FOUND"),
        ("exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED"),
        ("crash", grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
async def test_errors_map_to_documented_codes(probe_stub, kind, code, reason):
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await probe_stub.Echo(probe_pb2.EchoRequest(fail_with=kind))
    assert failure.value.code() == code
    info, _ = details_of(failure.value)
    assert info.reason == reason
    if kind == "exhausted":
        assert info.metadata["max_queue"] == "8"
    if kind == "crash":
        details = failure.value.details() or ""
        assert "a bug" not in details  # internals stay in the log, not in the caller's error
        assert "trace" in details


@pytest.mark.service
async def test_error_in_the_middle_of_a_stream_keeps_what_was_sent(probe_stub):
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        async for reply in probe_stub.EchoStream(probe_pb2.EchoRequest(text="t", fail_with="invalid")):
            received.append(reply.text)
    assert received == ["t0"]
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.service
async def test_invalid_utf8_is_invalid_argument_not_internal(probe):
    # Field 1 (text), wire type 2, length 2, bytes that are not UTF-8.
    raw = bytes([0x0A, 0x02, 0xC3, 0x28])
    async with grpc.aio.insecure_channel(probe.address) as channel:
        call = channel.unary_unary(ECHO, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call(raw)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = details_of(failure.value)
    assert info.reason == "UNDECODABLE_REQUEST"
    assert bad.field_violations[0].field == "request"


# --- deadlines ------------------------------------------------------------------------------------------------------


@pytest.mark.service
async def test_callers_deadline_propagates_downstream(probe_stub):
    downstream = await start_probe("downstream")
    try:
        reply = await probe_stub.Echo(probe_pb2.EchoRequest(text="x", downstream=downstream.address), timeout=3)
        assert 0 < reply.deadline_remaining_s < 3.05  # grpc rounds timeouts up on the wire
        unbounded = await probe_stub.Echo(probe_pb2.EchoRequest(text="x", downstream=downstream.address))
        assert unbounded.deadline_remaining_s == -1
    finally:
        await downstream.stop(0)


@pytest.mark.service
async def test_time_spent_upstream_shrinks_the_downstream_budget(probe_stub):
    downstream = await start_probe("downstream")
    try:
        # The upstream probe sleeps 0.5 s before calling downstream: only what is left of 3 s may be passed on.
        reply = await probe_stub.Echo(
            probe_pb2.EchoRequest(text="x", sleep_ms=500, downstream=downstream.address), timeout=3
        )
        assert 0 < reply.deadline_remaining_s < 2.6  # grpc rounds timeouts on the wire
    finally:
        await downstream.stop(0)


@pytest.mark.unit
def test_no_downstream_call_starts_once_the_deadline_has_passed():
    import time

    from lorag_core.errors import DeadlineExceeded
    from lorag_core.interceptors import current_deadline, propagated_timeout

    token = current_deadline.set(time.monotonic() - 0.01)
    try:
        with pytest.raises(DeadlineExceeded):
            propagated_timeout(5.0)
    finally:
        current_deadline.reset(token)
    token = current_deadline.set(time.monotonic() + 1.0)
    try:
        remaining = propagated_timeout(5.0)
        assert remaining is not None and 0.9 < remaining <= 1.0
        assert propagated_timeout(0.5) == 0.5
    finally:
        current_deadline.reset(token)


# --- tracing and logs ---------------------------------------------------------------------------------------------


@pytest.mark.service
async def test_a_hop_is_parent_and_child_spans_in_one_trace_and_logs_carry_its_ids(capsys):
    upstream, downstream = await start_probe("upstream"), await start_probe("downstream")
    SPANS.clear()
    try:
        async with grpc.aio.insecure_channel(upstream.address) as channel:
            await probe_pb2_grpc.ProbeServiceStub(channel).Echo(
                probe_pb2.EchoRequest(text="trace me", downstream=downstream.address)
            )
    finally:
        await upstream.stop(0)
        await downstream.stop(0)
    spans = [s for s in SPANS.get_finished_spans() if s.name == ECHO]
    server_spans = [s for s in spans if s.kind.name == "SERVER"]
    client_spans = [s for s in spans if s.kind.name == "CLIENT"]
    assert len(server_spans) == 2 and len(client_spans) == 1
    outer = next(s for s in server_spans if s.parent is None)
    inner = next(s for s in server_spans if s.parent is not None)
    (hop,) = client_spans
    assert hop.parent is not None and inner.parent is not None
    assert hop.parent.span_id == outer.context.span_id
    assert inner.parent.span_id == hop.context.span_id
    assert {s.context.trace_id for s in spans} == {outer.context.trace_id}

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "rpc" and line.get("method", "").endswith("/Echo")]
    assert access, "no access-log line was written"
    trace_id = format(outer.context.trace_id, "032x")
    assert {line["trace_id"] for line in access} == {trace_id}
    assert {line["span_id"] for line in access} == {
        format(outer.context.span_id, "016x"),
        format(inner.context.span_id, "016x"),
    }
    assert all(line["code"] == "OK" for line in access)


# --- configuration ------------------------------------------------------------------------------------------------


class ProbeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="LORAG_PROBE_", extra="ignore", frozen=True)  # as services declare it


@pytest.mark.unit
def test_bad_config_fails_fast_naming_the_variable(monkeypatch):
    monkeypatch.setenv("LORAG_PROBE_PORT", "not-a-port")
    monkeypatch.setenv("LORAG_PROBE_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError) as failure:
        load_settings(ProbeSettings)
    assert "LORAG_PROBE_PORT='not-a-port'" in str(failure.value)
    assert "LORAG_PROBE_LOG_LEVEL='LOUD'" in str(failure.value)
    assert failure.value.code == 2


@pytest.mark.unit
def test_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("LORAG_PROBE_PORT", "50999")
    monkeypatch.setenv("LORAG_PROBE_GRACE_SECONDS", "2.5")
    settings = load_settings(ProbeSettings)
    assert (settings.port, settings.grace_seconds) == (50999, 2.5)


# --- downstream errors --------------------------------------------------------------------------------------------


@pytest.mark.service
async def test_downstream_errors_keep_their_meaning(probe_stub):
    from lorag_core.downstream import error_from_rpc
    from lorag_core.errors import LoragError, Unavailable

    async def call(dependency: str, stub, request) -> LoragError:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Echo(request, timeout=2)
        return error_from_rpc(failed.value, dependency=dependency)

    invalid = await call("probe", probe_stub, probe_pb2.EchoRequest(fail_with="invalid"))
    assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT and invalid.dependency == "probe"
    assert invalid.reason == "INVALID_ARGUMENT"
    assert [(v.field, v.description) for v in invalid.violations] == [("text", "must not be 'bad'")]

    crashed = await call("probe", probe_stub, probe_pb2.EchoRequest(fail_with="crash"))
    assert crashed.code == grpc.StatusCode.INTERNAL  # a bug stays a bug, with the dependency named
    assert crashed.metadata["dependency"] == "probe"

    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        down = await call("nowhere", probe_pb2_grpc.ProbeServiceStub(channel), probe_pb2.EchoRequest())
    assert isinstance(down, Unavailable)
    assert "nowhere service is unavailable" in down.message
