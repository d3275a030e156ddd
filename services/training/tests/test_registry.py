"""AdapterRegistry on a real MLflow SQLite store with a local artifact folder (one store for the module: creating
the schema takes seconds)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lorag_core.errors import InvalidArgument, NotFound, Unavailable
from lorag_training.registry import AdapterRegistry, default_artifact_location, local_path
from lorag_training.worker.tracking import ensure_experiment


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    registry = AdapterRegistry(uri)
    client = registry.client
    experiment = ensure_experiment(client, "adapters-test", uri)
    adapter = root / "adapter-src"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    runs = [client.create_run(experiment).info.run_id for _ in range(3)]
    return {"uri": uri, "root": root, "registry": registry, "adapter": adapter, "runs": runs}


def lineage(job: str) -> dict[str, str]:
    return {
        "dataset_version": "d" * 64,
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "job_id": job,
        "method": "lora",
        "eval_loss": "1.25",
    }


@pytest.mark.service
def test_register_then_get(store: dict) -> None:
    reg: AdapterRegistry = store["registry"]
    first = reg.register("support-bot", str(store["adapter"]), store["runs"][0], lineage("j1"), description="first")
    second = reg.register("support-bot", str(store["adapter"]), store["runs"][1], lineage("j2"))
    assert (first.name, first.version, second.version) == ("support-bot", "1", "2")
    # the artifact was copied under the run and source_uri is a plain folder generation can load
    source = Path(first.source_uri)
    assert source.is_dir() and (source / "adapter_config.json").read_text() == '{"r": 8}'
    assert source.is_relative_to(store["root"] / "mlartifacts")
    assert first.lineage == {**lineage("j1"), "mlflow_run_id": store["runs"][0]}
    assert first.tags == {} and first.description == "first" and first.aliases == []
    latest = reg.get("support-bot")
    assert latest.version == "2" and latest.lineage["job_id"] == "j2"
    assert reg.get("support-bot", version="1").lineage["job_id"] == "j1"
    assert reg.get("support-bot", version="v1").version == "1"
    assert first.create_time <= latest.create_time


@pytest.mark.service
def test_aliases(store: dict) -> None:
    reg: AdapterRegistry = store["registry"]
    reg.register("alias-bot", str(store["adapter"]), store["runs"][0], lineage("a1"))
    reg.register("alias-bot", str(store["adapter"]), store["runs"][1], lineage("a2"))
    moved = reg.set_alias("alias-bot", "production", "1")
    assert moved.version == "1" and moved.aliases == ["production"]
    assert reg.get("alias-bot", alias="production").version == "1"
    reg.set_alias("alias-bot", "production", "2")  # moving it
    reg.set_alias("alias-bot", "staging", "2")
    assert reg.get("alias-bot", alias="production").version == "2"
    assert reg.get("alias-bot", version="2").aliases == ["production", "staging"]
    assert reg.get("alias-bot", version="1").aliases == []
    reg.delete_alias("alias-bot", "production")
    assert reg.get("alias-bot", version="2").aliases == ["staging"]
    with pytest.raises(NotFound):
        reg.get("alias-bot", alias="production")
    with pytest.raises(NotFound):
        reg.delete_alias("alias-bot", "production")
    assert reg.get("alias-bot", version="2").version == "2"  # the version stays


@pytest.mark.service
@pytest.mark.parametrize("alias", ["", "latest", "LATEST", "123", "v1", "V22", "has space", "a/b", "x" * 256])
def test_bad_alias_names(store: dict, alias: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        store["registry"].set_alias("support-bot", alias, "1")
    assert info.value.violations[0].field == "alias"


@pytest.mark.service
@pytest.mark.parametrize("alias", ["production", "staging-2", "v1beta", "canary_a", "x1"])
def test_good_alias_names(store: dict, alias: str) -> None:
    assert alias in store["registry"].set_alias("support-bot", alias, "1").aliases


@pytest.mark.service
def test_not_found_cases(store: dict) -> None:
    reg: AdapterRegistry = store["registry"]
    with pytest.raises(NotFound):
        reg.get("no-such-adapter")
    with pytest.raises(NotFound):
        reg.get("support-bot", version="99")
    with pytest.raises(NotFound):
        reg.get("support-bot", alias="nobody")
    with pytest.raises(NotFound):
        reg.set_alias("support-bot", "production", "99")
    with pytest.raises(NotFound):
        reg.set_alias("no-such-adapter", "production", "1")
    with pytest.raises(NotFound):
        reg.delete_alias("no-such-adapter", "production")
    with pytest.raises(NotFound):
        reg.list_versions("no-such-adapter", 10, "")
    with pytest.raises(NotFound):
        reg.register("x", str(store["adapter"]), "0" * 32, {})
    with pytest.raises(InvalidArgument):
        reg.get("support-bot", version="one")
    with pytest.raises(InvalidArgument):
        reg.register("x", str(store["root"] / "missing"), store["runs"][0], {})


@pytest.mark.service
def test_list_pagination(store: dict) -> None:
    reg: AdapterRegistry = store["registry"]
    for i in range(3):
        reg.register("paged", str(store["adapter"]), store["runs"][2], lineage(f"p{i}"))
    reg.set_alias("paged", "production", "2")
    page1, token = reg.list_versions("paged", 2, "")
    assert [r.version for r in page1] == ["3", "2"] and token
    assert [r.aliases for r in page1] == [[], ["production"]]  # listed versions carry their aliases
    page2, token2 = reg.list_versions("paged", 2, token)
    assert [r.version for r in page2] == ["1"] and token2 == ""
    everything, _ = reg.list_versions(None, 1000, "")
    keys = [(r.name, int(r.version)) for r in everything]
    assert keys == sorted(keys, key=lambda k: (k[0], -k[1]))  # by name, newest version first
    assert {"paged", "support-bot"} <= {r.name for r in everything}
    with pytest.raises(InvalidArgument) as info:
        reg.list_versions("paged", 2, "garbage")
    assert (info.value.reason, info.value.violations[0].field) == ("INVALID_PAGE_TOKEN", "page_token")
    with pytest.raises(InvalidArgument) as info:
        reg.list_versions("support-bot", 2, token)  # another listing's token
    assert (info.value.reason, info.value.violations[0].field) == ("INVALID_PAGE_TOKEN", "page_token")
    with pytest.raises(InvalidArgument) as info:
        reg.list_versions("paged", 5000, "")
    assert (info.value.reason, info.value.violations[0].field) == ("PAGE_SIZE_OUT_OF_RANGE", "page_size")


@pytest.mark.service
def test_unreachable_tracking_server_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg = AdapterRegistry(f"http://127.0.0.1:{port}")
    with pytest.raises(Unavailable):
        reg.get("support-bot")


@pytest.mark.unit
def test_uri_helpers(tmp_path: Path) -> None:
    assert local_path("file:///tmp/a%20b/adapter") == "/tmp/a b/adapter"
    assert local_path("/srv/x") == "/srv/x"
    assert local_path("s3://bucket/adapter") == "s3://bucket/adapter"
    assert default_artifact_location(f"sqlite:///{tmp_path}/m.db", "my exp") == str(tmp_path / "mlartifacts" / "my_exp")
    assert default_artifact_location("http://mlflow:5000", "e") is None
