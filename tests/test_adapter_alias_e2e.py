"""Serving follows the registry: generation resolves ``name@alias`` through the real training service (MLflow
registry underneath) and hot-swaps when the alias moves, with no failed request during the swap.

Two real adapter versions are registered in the training service's own MLflow store (as a finished job registers
its adapter); aliases are moved through the training service's public API (SetAdapterAlias), exactly as
`lorag adapters alias` does. The generation service here is its own server, pointed at that training service.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lorag_client import GenerationClient, TrainingClient
from lorag_core.errors import NotFound
from lorag_generation.config import GenerationSettings
from lorag_generation.server import create_app as create_generation
from lorag_training.config import TrainingSettings
from lorag_training.registry import AdapterRegistry
from lorag_training.server import create_app as create_training

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = dict(messages=QUESTION, temperature=0, max_new_tokens=10)


def register_versions(settings: TrainingSettings, folders: list[Path]) -> None:
    """Register each folder as the next version of "support", each from its own MLflow run."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.resolved_tracking_uri)
    experiment = client.create_experiment("alias-e2e", artifact_location=str(settings.artifacts_dir / "alias-e2e"))
    registry = AdapterRegistry(settings.resolved_tracking_uri, settings.resolved_registry_uri)
    for index, folder in enumerate(folders):
        run = client.create_run(experiment).info.run_id
        registry.register("support", str(folder), run, {"job_id": f"job-{index}", "base_model": "SmolLM2-135M"})


@pytest.fixture(scope="module")
async def training(tmp_path_factory, make_demo_adapter):
    settings = TrainingSettings(port=0, data_dir=tmp_path_factory.mktemp("registry"), devices="", grace_seconds=0)
    await asyncio.to_thread(register_versions, settings, [make_demo_adapter(0), make_demo_adapter(1)])
    app, runtime = create_training(settings)
    await app.start()
    await runtime.start()
    await app.set_serving()
    async with TrainingClient(app.address, timeout=120) as client:
        await client.set_alias("support", "production", "1")
        yield client, app.address
    await app.stop(0)
    await runtime.close()


@pytest.fixture(scope="module")
async def generation(training):
    settings = GenerationSettings(port=0, training_address=training[1], alias_poll_seconds=0.5)
    app, service = create_generation(settings)
    await app.start()
    await service.start()
    await app.set_serving()
    async with GenerationClient(app.address, timeout=600) as client:
        yield client
    await app.stop(0)
    await service.close()


async def test_alias_resolves_through_the_training_registry(training, generation) -> None:
    registry, _ = training
    by_alias = await generation.generate(adapter="support@production", **GREEDY)
    assert (by_alias.adapter.name, by_alias.adapter.version, by_alias.adapter.alias) == ("support", "1", "production")
    by_version = await generation.generate(adapter="support@2", **GREEDY)
    assert by_version.adapter.version == "2" and by_version.text != by_alias.text
    latest = await generation.generate(adapter="support", **GREEDY)  # a plain name: the latest version
    assert latest.adapter.version == "2"
    for reference in ("support@staging", "nobody@production", "support@9"):
        with pytest.raises(NotFound, match=r"\w"):
            await generation.generate(adapter=reference, **GREEDY)
    assert (await registry.get_adapter_version("support@production")).version == "1"


async def test_moving_the_alias_hot_swaps_without_failed_requests(training, generation) -> None:
    registry, _ = training
    await registry.set_alias("support", "production", "1")
    loaded = await generation.load_adapter(
        registry_reference="support@production", follow_alias=True, name="support-prod"
    )
    assert (loaded.adapter.version, loaded.adapter.alias) == ("1", "production")
    v1 = await generation.generate(adapter="support-prod", **GREEDY)
    v2_text = (await generation.generate(adapter="support@2", **GREEDY)).text
    assert v1.text != v2_text

    versions: list[str] = []
    texts: dict[str, set[str]] = {"1": set(), "2": set()}

    async def keep_asking(stop: asyncio.Event) -> None:
        while not stop.is_set():
            reply = await generation.generate(adapter="support-prod", **GREEDY)  # any failure fails the test
            versions.append(reply.adapter.version)
            texts[reply.adapter.version].add(reply.text)

    stop = asyncio.Event()
    callers = [asyncio.create_task(keep_asking(stop)) for _ in range(3)]
    await asyncio.sleep(1.0)
    moved = await registry.set_alias("support", "production", "2")  # the public API `lorag adapters alias` uses
    assert "production" in moved.aliases
    for _ in range(240):  # the service polls the alias every 0.5 s; wait until callers see version 2
        if versions and versions[-1] == "2":
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*callers)

    assert versions[0] == "1" and versions[-1] == "2"
    first_two = versions.index("2")
    assert all(v == "2" for v in versions[first_two:])  # switched once, never back
    assert texts == {"1": {v1.text}, "2": {v2_text}}  # each version served its own weights, whole
    listed = {a.name: a for a in (await generation.list_adapters()).adapters}
    assert (listed["support-prod"].version, listed["support-prod"].alias) == ("2", "production")
