"""The one client layer: retries come from the contracts, failures are typed lorag errors, never raw gRPC ones."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pb2 import MethodOptions

from lorag_client import CLIENTS, InvalidArgument, ServiceClient, Unavailable
from lorag_core import errors
from lorag_core.clients import ChannelSecurity, is_retryable, retry_service_config
from lorag_core.config import ServiceSettings
from lorag_core.server import ServiceApp

sys.path.insert(0, str(Path(__file__).parents[2] / "lorag-core" / "tests" / "protos"))
probe_pb2, probe_pb2_grpc = grpc.protos_and_services("lorag_probe/probe.proto")
PROBE = probe_pb2.DESCRIPTOR.services_by_name["ProbeService"]

#: The RPCs that must never be repeated behind a caller's back: they generate, or create something new each time.
NEVER_RETRIED = {"IngestDocuments", "Ask", "AskStream", "Generate", "GenerateStream", "CreateTrainingJob"}


def retried_methods(config: dict[str, Any]) -> set[str]:
    return {name["method"] for method_config in config.get("methodConfig", []) for name in method_config["name"]}


@pytest.mark.unit
@pytest.mark.parametrize("service", sorted(CLIENTS))
def test_every_rpc_declares_its_idempotency_unless_it_must_never_be_retried(service: str) -> None:
    descriptor = CLIENTS[service].descriptor
    undeclared = {
        m.name for m in descriptor.methods if m.GetOptions().idempotency_level == MethodOptions.IDEMPOTENCY_UNKNOWN
    }
    assert undeclared <= NEVER_RETRIED, f"{service}: declare option idempotency_level on {undeclared - NEVER_RETRIED}"
    retried = retried_methods(retry_service_config([descriptor]))
    assert retried == {m.name for m in descriptor.methods if is_retryable(m)}
    assert not retried & NEVER_RETRIED


@pytest.mark.unit
def test_the_generation_and_ask_rpcs_are_never_retried_whoever_calls_them() -> None:
    retried = retried_methods(retry_service_config([c.descriptor for c in CLIENTS.values()]))
    assert {"Retrieve", "Search", "Embed", "UpsertChunks", "GetAdapterVersion", "SetAdapterAlias"} <= retried
    assert not {"Generate", "GenerateStream", "Ask", "AskStream", "IngestDocuments", "CreateTrainingJob"} & retried
    assert retry_service_config([]) == {}


@pytest.mark.unit
def test_channel_security_from_the_environment(tmp_path: Path) -> None:
    assert ChannelSecurity.from_env({}) == ChannelSecurity()
    assert ChannelSecurity.from_env({}).credentials() is None
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    security = ChannelSecurity.from_env({"LORAG_TLS_CA_FILE": str(ca), "LORAG_TLS_SERVER_NAME": "gateway.lorag"})
    assert security.tls and security.root_certificates == ca.read_bytes() and security.server_name == "gateway.lorag"
    assert ChannelSecurity.from_env({"LORAG_TLS": "true"}).tls
    with pytest.raises(ValueError, match="both"):
        ChannelSecurity.from_env({"LORAG_TLS_CERT_FILE": str(ca)})


class ProbeClient(ServiceClient):
    """A client of the chassis' probe contract, built exactly as lorag's own clients are."""

    service = "gateway"  # any known service name: only the address default uses it
    descriptor = PROBE

    def _make_stub(self) -> Any:
        return probe_pb2_grpc.ProbeServiceStub(self.channel)

    async def echo(self, text: str, fail_with: str = "") -> Any:
        return await self._unary(self._stub.Echo, probe_pb2.EchoRequest(text=text, fail_with=fail_with))

    async def echo_stream(self, text: str, fail_with: str = "") -> AsyncIterator[Any]:
        request = probe_pb2.EchoRequest(text=text, fail_with=fail_with)
        async for response in self._server_stream(self._stub.EchoStream, request, timeout=5):
            yield response


class FlakyProbe(probe_pb2_grpc.ProbeServiceServicer):  # type: ignore[name-defined]  # generated at run time
    """Answers UNAVAILABLE to the first ``failures`` calls of each RPC, counting every call it sees."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = {"Echo": 0, "EchoStream": 0}

    def _flaky(self, method: str) -> None:
        self.calls[method] += 1
        if self.calls[method] <= self.failures:
            raise errors.Unavailable("warming up", reason="NOT_READY")

    async def Echo(self, request: Any, context: Any) -> Any:
        self._flaky("Echo")
        if request.fail_with == "invalid":
            raise errors.InvalidArgument.of("text", "must not be 'bad'")
        return probe_pb2.EchoResponse(text=request.text)

    async def EchoStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self._flaky("EchoStream")
        yield probe_pb2.EchoResponse(text=request.text)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[ServiceApp, FlakyProbe]]:
    servicer = FlakyProbe(failures=2)
    app = ServiceApp("probe", ServiceSettings(port=0, grace_seconds=0))
    app.add_service(PROBE, probe_pb2_grpc.add_ProbeServiceServicer_to_server, servicer)
    await app.start()
    await app.set_serving()
    yield app, servicer
    await app.stop(0)


@pytest.mark.service
async def test_declared_rpcs_are_retried_and_others_fail_at_once_with_typed_errors(flaky) -> None:
    app, servicer = flaky
    async with ProbeClient(app.address, timeout=10) as client:
        assert (await client.echo("hello")).text == "hello"  # NO_SIDE_EFFECTS: two UNAVAILABLE, then served
        assert servicer.calls["Echo"] == 3

        with pytest.raises(Unavailable) as down:  # no idempotency declared: one call, then a typed error
            [r async for r in client.echo_stream("hello")]
        assert servicer.calls["EchoStream"] == 1
        assert down.value.code == grpc.StatusCode.UNAVAILABLE and down.value.dependency == "gateway"
        assert down.value.reason == "NOT_READY" and not isinstance(down.value, grpc.RpcError)

        with pytest.raises(InvalidArgument) as invalid:
            await client.echo("bad", fail_with="invalid")
        assert [(v.field, v.description) for v in invalid.value.violations] == [("text", "must not be 'bad'")]

    async with ProbeClient(app.address, timeout=10, retries=False) as client:
        servicer.calls["Echo"], servicer.failures = 0, 1
        with pytest.raises(Unavailable):  # retries off (load generators): the first failure is the answer
            await client.echo("hello")
        assert servicer.calls["Echo"] == 1


@pytest.mark.service
async def test_invoke_calls_any_rpc_by_name_with_typed_errors(flaky) -> None:
    app, servicer = flaky
    servicer.failures = 0
    async with ProbeClient(app.address, timeout=10) as client:
        assert (await client.invoke("Echo", probe_pb2.EchoRequest(text="x"))).text == "x"
        streamed = [
            r.text async for r in client.invoke_stream("EchoStream", probe_pb2.EchoRequest(text="y"), timeout=5)
        ]
        assert streamed == ["y"]
        with pytest.raises(ValueError, match="no single-response RPC"):
            await client.invoke("EchoStream", probe_pb2.EchoRequest())
        with pytest.raises(InvalidArgument):
            await client.invoke("Echo", probe_pb2.EchoRequest(fail_with="invalid"))
