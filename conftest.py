"""Session fixtures shared by every test tier: one real Weaviate, models from local packages only (no hub)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from lorag_cli.stack.weaviate import WeaviateServer
from lorag_testing import tier_problems


@pytest.hookimpl(tryfirst=True)  # before -m / -k deselect: every collected test is checked, whatever runs
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail the run when a test carries no tier marker (unit, service, e2e) or more than one."""
    problems = tier_problems(items)
    if problems:
        raise pytest.UsageError(
            f"{len(problems)} test(s) need exactly one tier marker, unit, service or e2e "
            "(see docs/development.md, Testing):\n  " + "\n  ".join(problems)
        )


@pytest.fixture(scope="session")
def weaviate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeaviateServer]:
    """One real Weaviate for the session, on free ports with a throwaway data dir.

    Use `weaviate.host`, `.http_port`, `.grpc_port` (or `.lorag_env()` for a service's environment).
    """
    root = tmp_path_factory.mktemp("weaviate")
    with WeaviateServer(root / "data", log_path=root / "weaviate.log") as server:
        yield server


def build_demo_adapter(
    target: Path, seed: int = 0, target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
) -> Path:
    """Save a small real PEFT LoRA adapter for the default base model into ``target`` and return it.

    LoRA initialises B to zero (the adapter starts as a no-op); B is drawn from a seeded normal distribution instead,
    large enough that greedy output visibly differs from the base model's, so adapter selection is observable.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorag_models import resolve_model

    base = AutoModelForCausalLM.from_pretrained(resolve_model().path, dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=list(target_modules), lora_dropout=0.0, task_type="CAUSAL_LM"
    )
    with torch.random.fork_rng():  # peft draws A from the global generator: seed it so the adapter is reproducible
        torch.manual_seed(seed)
        model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    model.save_pretrained(str(target))
    return target


@pytest.fixture(scope="session")
def make_demo_adapter(tmp_path_factory: pytest.TempPathFactory):
    """A factory for demo adapters: ``make_demo_adapter(seed)`` -> folder (built once per seed per session)."""
    built: dict[int, Path] = {}

    def make(seed: int = 0) -> Path:
        if seed not in built:
            built[seed] = build_demo_adapter(tmp_path_factory.mktemp(f"demo-adapter-{seed}"), seed)
        return built[seed]

    return make


@pytest.fixture(scope="session")
def demo_adapter(make_demo_adapter) -> Path:
    """A real PEFT LoRA adapter folder (adapter_config.json + safetensors) for the default base model, whose greedy
    output differs from the base model's."""
    return make_demo_adapter(0)


@pytest.fixture(scope="session")
async def generation_service():
    """A real generation server (transformers backend, the default SmolLM2 model, loaded once) on port 0.

    Yields its ``"host:port"``. Tests that change adapters should use their own names and unload them after.
    """
    from lorag_generation.config import GenerationSettings
    from lorag_generation.server import create_app as create_generation

    app, generation = create_generation(GenerationSettings(port=0))
    await app.start()
    await generation.start()
    await app.set_serving()
    yield app.address
    await app.stop(0)
    await generation.close()


@pytest.fixture(scope="session")
async def lorag_services(weaviate: WeaviateServer, generation_service: str, tmp_path_factory: pytest.TempPathFactory):
    """All six services, each a real gRPC server on port 0 in this process, on the session's Weaviate: the whole
    stack on loopback, with each model loaded once. Training runs CPU-only on a throwaway data dir.

    Yields ``{service name: "host:port"}``.
    """
    from lorag_embedding.config import EmbeddingSettings
    from lorag_embedding.server import create_app as create_embedding
    from lorag_gateway.config import GatewaySettings
    from lorag_gateway.server import Gateway
    from lorag_indexer.config import IndexerSettings
    from lorag_indexer.server import create_app as create_indexer
    from lorag_retrieval.config import RetrievalSettings
    from lorag_retrieval.server import create_app as create_retrieval
    from lorag_training.config import TrainingSettings
    from lorag_training.server import create_app as create_training

    started = []

    async def launch(app, startup=None, shutdown=None):
        await app.start()
        if startup is not None:
            await startup()
        await app.set_serving()
        started.append((app, shutdown))
        return app.address

    embedding_app, embedder = create_embedding(EmbeddingSettings(port=0))
    addresses = {"embedding": await launch(embedding_app, embedder.start, embedder.close)}
    indexer_app, store = create_indexer(
        IndexerSettings(
            port=0,
            weaviate_host=weaviate.host,
            weaviate_http_port=weaviate.http_port,
            weaviate_grpc_port=weaviate.grpc_port,
        )
    )
    addresses["indexer"] = await launch(indexer_app, store.start, store.close)
    retrieval_app, retriever = create_retrieval(
        RetrievalSettings(port=0, embedding_address=addresses["embedding"], indexer_address=addresses["indexer"])
    )
    addresses["retrieval"] = await launch(retrieval_app, retriever.start, retriever.close)
    addresses["generation"] = generation_service
    training_app, training = create_training(
        TrainingSettings(port=0, data_dir=tmp_path_factory.mktemp("training"), devices="", grace_seconds=0)
    )
    addresses["training"] = await launch(training_app, training.start, training.close)
    gateway = Gateway(
        GatewaySettings(
            port=0,
            **{f"{name}_address": addresses[name] for name in ("embedding", "indexer", "retrieval", "generation")},
        )
    )
    addresses["gateway"] = await launch(gateway.app, None, gateway.close)
    yield addresses
    for app, shutdown in reversed(started):
        await app.stop(0)
        if shutdown is not None:
            await shutdown()


@pytest.fixture(scope="session")
def process_stack(tmp_path_factory: pytest.TempPathFactory):
    """The stack as it is deployed, once per session: a Jaeger (in memory) and Weaviate plus every installed service,
    each its own process on free ports with its own metrics port, exporting OTLP to that Jaeger.

    Yields ``(jaeger, stack)`` (``lorag_testing.jaeger.JaegerServer``, ``lorag_cli.stack.manager.LocalStack``).
    Skipped only where the Jaeger binary is absent; `make setup` builds it, as CI does.
    """
    from lorag_cli.stack.components import SERVICES
    from lorag_cli.stack.manager import LocalStack
    from lorag_cli.stack.private import private_env
    from lorag_testing.jaeger import JaegerNotInstalledError, JaegerServer, find_jaeger_binary

    try:
        find_jaeger_binary()
    except JaegerNotInstalledError as exc:
        pytest.skip(f"{exc} (CI builds it in `make setup`)")
    root = tmp_path_factory.mktemp("process-stack")
    with JaegerServer(root / "jaeger") as jaeger:
        installed = [s for s in SERVICES if s.installed()]
        env = private_env(root / "state", [s.name for s in installed], jaeger.otel_env(schedule_delay_ms=100))
        stack = LocalStack(state=root / "state", env=env, services=installed)
        try:
            stack.up(timeout=300.0)  # model loads overlap on a 2-core box
            yield jaeger, stack
        finally:
            stack.down(grace=10)
