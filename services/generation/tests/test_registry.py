"""Service tier: adapters resolved through a registry that speaks the training service's real gRPC contract.

The registry here is a small ``TrainingService`` servicer in the test answering ``GetAdapterVersion`` from a table
of real adapter folders (the training service is its own deployable; its end-to-end test with MLflow belongs to
the cross-service suite). The generation service reaches it through ``LORAG_GENERATION_TRAINING_ADDRESS``.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from lorag.training.v1 import training_service_pb2 as training_pb
from lorag.training.v1 import training_service_pb2_grpc as training_grpc
from lorag_client import GenerationClient
from lorag_generation.config import GenerationSettings
from lorag_generation.server import create_app

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class Registry(training_grpc.TrainingServiceServicer):
    """Adapter versions and aliases, as the training service's registry reports them."""

    def __init__(self, versions: dict[str, Path]) -> None:
        self.versions = versions
        self.aliases = {"production": "1"}

    async def GetAdapterVersion(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        name, _, selector = request.reference.partition("@")
        version = self.aliases.get(selector, selector) if selector else max(self.versions, key=int)
        if name != "support" or version not in self.versions:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no adapter version {request.reference!r}")
        return training_pb.GetAdapterVersionResponse(
            adapter_version=training_pb.AdapterVersion(
                name=name,
                version=version,
                aliases=[a for a, v in self.aliases.items() if v == version],
                source_uri=self.versions[version].as_uri(),
            )
        )


@pytest.fixture(scope="module")
async def registry(make_demo_adapter):  # type: ignore[no-untyped-def]
    servicer = Registry({"1": make_demo_adapter(0), "2": make_demo_adapter(1)})
    server = grpc.aio.server()
    training_grpc.add_TrainingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture(scope="module")
async def service(registry):  # type: ignore[no-untyped-def]
    # The poll is driven by the test (check_aliases) so the switch happens at a known point.
    app, generation = create_app(GenerationSettings(port=0, training_address=registry[1], alias_poll_seconds=3600))
    await app.start()
    await generation.start()
    await app.set_serving()
    async with GenerationClient(app.address, timeout=600) as client:
        yield client, generation
    await app.stop(0)
    await generation.close()


async def test_registry_references_and_alias_following(service, registry) -> None:  # type: ignore[no-untyped-def]
    client, generation = service
    servicer, _ = registry
    kwargs = dict(messages=QUESTION, temperature=0, max_new_tokens=10)

    loaded = await client.load_adapter(registry_reference="support@production", follow_alias=True)
    assert (loaded.adapter.name, loaded.adapter.version, loaded.adapter.alias) == ("support", "1", "production")
    v1 = await client.generate(adapter="support", **kwargs)
    assert (v1.adapter.name, v1.adapter.version) == ("support", "1")

    by_version = await client.generate(adapter="support@2", **kwargs)  # resolved and loaded on demand
    assert (by_version.adapter.name, by_version.adapter.version) == ("support", "2")
    assert by_version.text != v1.text

    # A stream runs on version 1 while the alias moves to version 2 and the service switches.
    stream = client.generate_stream(adapter="support", messages=QUESTION, temperature=0, max_new_tokens=10)
    first = await stream.__anext__()
    servicer.aliases["production"] = "2"
    await generation.adapters.check_aliases()
    rest = [m async for m in stream]
    streamed = first.delta.text + "".join(m.delta.text for m in rest if m.HasField("delta"))
    assert rest[-1].summary.adapter.version == "1"
    assert streamed == v1.text  # the running request kept its weights

    v2 = await client.generate(adapter="support", **kwargs)
    assert (v2.adapter.name, v2.adapter.version, v2.text) == ("support", "2", by_version.text)
    listed = {a.name: a for a in (await client.list_adapters()).adapters}
    assert listed["support"].version == "2" and listed["support"].alias == "production"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.generate(adapter="support@staging", **kwargs)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
