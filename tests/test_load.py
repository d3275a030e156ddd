"""Load tooling against real services: ghz by reflection alone, and a short `lorag load` of every service.

The runs are short (about 2 s each) and assert behaviour only: no errors, calls made, the report's keys, the plot
written. Capacity figures come from `lorag load` runs by hand (docs/load-testing.md), never from CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from google.protobuf import json_format

from lorag_cli.load import payloads

ROOT = Path(__file__).resolve().parent.parent
LORAG = str(Path(sys.executable).parent / "lorag")
GHZ = shutil.which("ghz") or str(Path(os.environ.get("LORAG_CACHE", Path.home() / ".cache/lorag")) / "bin/ghz")
GHZ_CONFIGS = ROOT / "benchmarks" / "ghz"
SERVICES = ("embedding", "indexer", "retrieval", "gateway", "generation", "training")
# Users' scripts read these keys: they must stay exactly so.
REQUIRED_KEYS = {
    "service",
    "rpc",
    "mode",
    "duration_s",
    "requests",
    "ok",
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "errors",
    "plot",
}
COLLECTION = f"LoadCi{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def addresses(lorag_services) -> dict[str, str]:
    """Every service of the in-process stack, by name."""
    return dict(lorag_services)


async def lorag(addresses: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **{f"LORAG_{name.upper()}_ADDRESS": address for name, address in addresses.items()}}
    return await asyncio.to_thread(
        subprocess.run, [LORAG, *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real corpus, so that preparing a collection (ingesting it) takes seconds, not minutes."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "adapters.md").write_text(
        "# Adapters\n\nLoRA adapters change how the model behaves without retraining all of its weights. "
        "The generation service loads several adapters at once and picks one per request. "
        "An adapter alias such as production points at one registered version.\n"
    )
    (folder / "search.md").write_text(
        "# Search\n\nHybrid search fuses a BM25 keyword ranking with a dense vector ranking. "
        "A reranker reorders the first-stage candidates with a cross-encoder. "
        "Each tenant's chunks are isolated from every other tenant in the same collection.\n"
    )
    (folder / "ingest.txt").write_text(
        "Ingest parses each document, splits it into chunks, embeds them and indexes them. "
        "Re-ingesting an unchanged document writes nothing, because its content hash is already stored.\n"
    )
    return folder


@pytest.mark.e2e
@pytest.mark.parametrize("service", SERVICES)
async def test_lorag_load_drives_each_service_without_errors(service: str, addresses, corpus: Path, tmp_path: Path):
    plot = tmp_path / f"{service}.html"
    # Embedding runs the open model (fixed rate), every other service the closed one (fixed concurrency).
    load = ["--rate", "5"] if service == "embedding" else ["--concurrency", "2"]
    done = await lorag(
        addresses,
        "load",
        service,
        *load,
        "--duration",
        "2",
        "--json",
        "--plot",
        str(plot),
        "--collection",
        COLLECTION,
        "--tenant",
        "ci",
        "--corpus",
        str(corpus),
        "--max-new-tokens",
        "8",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= REQUIRED_KEYS
    assert (report["service"], report["rpc"]) == (service, payloads.DEFAULT_RPC[service])
    assert report["address"] == addresses[service]
    if service == "embedding":
        # Open model: rate x duration requests, however fast the service answers.
        assert (report["mode"], report["target_rate"], report["requests"]) == ("rate", 5.0, 10)
    else:
        assert (report["mode"], report["concurrency"]) == ("concurrency", 2) and report["requests"] > 0
    assert report["errors"] == {}
    assert report["ok"] == report["requests"]
    assert 0 < report["p50_ms"] <= report["p90_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert report["rps"] > 0
    assert report["plot"] == str(plot)
    page = plot.read_text()
    assert "<svg" in page and "polyline" in page and f"lorag load {service}" in page
    if payloads.rpc_spec(service, None).needs_corpus:
        assert any(COLLECTION in note for note in report["notes"])


@pytest.mark.e2e
async def test_lorag_load_streams_record_time_to_first_message(addresses, corpus: Path):
    done = await lorag(
        addresses,
        "load",
        "generation",
        "--rpc",
        "GenerateStream",
        "--rate",
        "2",
        "--duration",
        "1",
        "--max-new-tokens",
        "8",
        "--json",
        "--no-plot",
        "--corpus",
        str(corpus),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["errors"] == {} and report["requests"] == 2
    assert 0 < report["time_to_first_message_p50_ms"] <= report["p50_ms"]


@pytest.mark.e2e
async def test_lorag_load_counts_errors_by_code_and_fails_when_asked(addresses, corpus: Path):
    too_many = str(257)  # The embedding service refuses more than 256 texts per request with INVALID_ARGUMENT.
    done = await lorag(
        addresses,
        "load",
        "embedding",
        "--batch",
        too_many,
        "--rate",
        "4",
        "--duration",
        "1",
        "--json",
        "--no-plot",
        "--fail-on-errors",
        "--corpus",
        str(corpus),
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert (report["requests"], report["ok"], report["errors"]) == (4, 0, {"INVALID_ARGUMENT": 4})
    assert report["p50_ms"] is None


@pytest.mark.e2e
async def test_ghz_loads_the_embedding_service_by_reflection_alone(lorag_services):
    """ghz finds the method by reflection (no --proto): the chassis closes bojand/ghz#419 for Python servers."""
    assert Path(GHZ).exists(), "ghz is installed by `make setup`"
    config = GHZ_CONFIGS / "embedding.json"
    done = await asyncio.to_thread(
        subprocess.run,
        [GHZ, "--config", str(config), "-z", "1500ms", "-c", "2", "-O", "json", lorag_services["embedding"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["count"] > 0
    assert not result.get("errorDistribution")
    assert result["statusCodeDistribution"] == {"OK": result["count"]}


@pytest.mark.unit
@pytest.mark.parametrize("config", sorted(GHZ_CONFIGS.glob("*.json")), ids=lambda p: p.stem)
def test_ghz_configs_use_reflection_and_requests_that_match_the_contract(config: Path):
    settings = json.loads(config.read_text())
    assert not {"proto", "protoset", "import-paths"} & set(settings), "reflection only"
    assert settings["insecure"] is True and settings["concurrency"] >= 1
    assert settings["duration"] and settings["duration-stop"] == "wait"  # In-flight calls finish, not cut.
    service = config.stem
    assert settings["call"] == payloads.full_method(service, payloads.DEFAULT_RPC[service])
    pb = payloads.messages(service)
    method = pb.DESCRIPTOR.services_by_name[payloads.SERVICE_PACKAGES[service]].methods_by_name[
        settings["call"].rsplit(".", 1)[1]
    ]
    request_type = getattr(pb, method.input_type.name)
    json_format.ParseDict(settings["data"], request_type())  # raises on a field the contract does not have
    port = int(settings["host"].rsplit(":", 1)[1])
    assert (
        port
        == {
            "gateway": 50051,
            "embedding": 50052,
            "indexer": 50053,
            "retrieval": 50054,
            "generation": 50055,
            "training": 50056,
        }[service]
    )
