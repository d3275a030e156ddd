"""The local stack manager against a real Weaviate and real (small) gRPC service processes.

Every test gets its own state folder and free ports through the same LORAG_* variables a user would set, so
nothing here collides with a stack on the default ports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from weaviate import connect_to_local
from weaviate.classes.config import Configure

from lorag_cli.main import app
from lorag_cli.stack import (
    Health,
    LocalStack,
    PortInUseError,
    PortPicker,
    ServiceSpec,
    StartupError,
    WeaviateNotInstalledError,
    WeaviatePorts,
    port_is_free,
    processes,
)

pytestmark = pytest.mark.service

# A minimal lorag-style service: standard health service, listens where LORAG_<NAME>_{HOST,PORT} say, records the
# environment it was given, and behaves as FAKE_MODE asks.
FAKE_SERVICE = textwrap.dedent(
    """
    import json, os, signal, sys, threading
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    name = os.environ["FAKE_NAME"].upper()
    mode = os.environ.get("FAKE_MODE_" + name, "serve")
    if mode == "crash":
        sys.exit("boom: LORAG_" + name + "_SETTING is invalid")
    with open(os.environ["FAKE_ENV_OUT_" + name], "w") as fh:
        json.dump({k: v for k, v in os.environ.items() if k.startswith("LORAG_")}, fh)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(os.environ["LORAG_" + name + "_HOST"] + ":" + os.environ["LORAG_" + name + "_PORT"])
    server.start()
    status = health_pb2.HealthCheckResponse.SERVING if mode == "serve" else health_pb2.HealthCheckResponse.NOT_SERVING
    servicer.set("", status)
    print("fake service listening", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(1)
    """
)


Running = tuple[Path, dict[str, str]]  # (root folder, stack environment) of the shared running stack.


def _stack_env(root: Path, **extra: str) -> dict[str, str]:
    """os.environ plus a private state folder and free Weaviate ports."""
    env = dict(os.environ)
    with PortPicker() as pick:
        env.update(
            LORAG_HOME=str(root / "state"),
            LORAG_WEAVIATE_HTTP_PORT=str(pick.single()),
            LORAG_WEAVIATE_GRPC_PORT=str(pick.single()),
            LORAG_WEAVIATE_GOSSIP_PORT=str(pick.pair(udp_first=True)),
            LORAG_WEAVIATE_RAFT_PORT=str(pick.pair()),
        )
    env.update(extra)
    return env


def _free_port() -> int:
    with PortPicker() as pick:
        return pick.single()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A stack with only Weaviate up, shared by the service tests; stopped at the end."""
    root = tmp_path_factory.mktemp("stack")
    env = _stack_env(root)
    stack = LocalStack(env=env, services=())
    stack.up(timeout=90)
    try:
        yield root, env
    finally:
        # Stop whatever the tests left (services included), by pid file.
        LocalStack(env=env, services=()).down(grace=5)


def _fake(
    root: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, name: str, mode: str = "serve"
) -> ServiceSpec:
    """A fake service `name` on free ports; its module lives in `root`, on our sys.path and the child's."""
    pkg = root / "fake_service"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(FAKE_SERVICE)
    monkeypatch.syspath_prepend(str(root))  # So the stack sees it as installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    env["FAKE_NAME"] = name
    env[f"FAKE_MODE_{name.upper()}"] = mode
    env[f"FAKE_ENV_OUT_{name.upper()}"] = str(root / f"{name}.env.json")
    env[f"LORAG_{name.upper()}_PORT"] = str(_free_port())
    env[f"LORAG_{name.upper()}_METRICS_PORT"] = str(_free_port())
    return ServiceSpec(name, 59999, module="fake_service")


# -- Weaviate lifecycle ----------------------------------------------------------------------------------------


def test_up_status_down_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    stack = LocalStack(env=env, services=())
    assert stack.state == tmp_path / "state"

    rows = stack.up(timeout=90)
    assert [(r.name, r.health) for r in rows] == [("weaviate", Health.SERVING)]
    first_pid = rows[0].pid
    assert first_pid and processes.is_running(first_pid)
    assert stack.pid_path("weaviate").is_file()
    assert rows[0].address == f"http://127.0.0.1:{env['LORAG_WEAVIATE_HTTP_PORT']}"
    assert rows[0].endpoints["grpc"] == f"127.0.0.1:{env['LORAG_WEAVIATE_GRPC_PORT']}"

    # A second `up` (a new CLI invocation: a new LocalStack) starts nothing new.
    again = LocalStack(env=env, services=()).up(timeout=30)
    assert again[0].pid == first_pid and again[0].health is Health.SERVING

    http, grpc_port = int(env["LORAG_WEAVIATE_HTTP_PORT"]), int(env["LORAG_WEAVIATE_GRPC_PORT"])
    with connect_to_local(host="127.0.0.1", port=http, grpc_port=grpc_port) as client:
        client.collections.create("Persisted", vector_config=Configure.Vectors.self_provided())

    assert LocalStack(env=env, services=()).down(grace=10) == ["weaviate"]
    assert not stack.pid_path("weaviate").exists()
    assert not processes.is_running(first_pid)
    assert [r.health for r in stack.status()] == [Health.DOWN]
    assert port_is_free(http) and port_is_free(grpc_port)
    assert LocalStack(env=env, services=()).down() == []  # Nothing left to stop.

    # Data survives a restart: it lives in the state folder, not in the process.
    assert (tmp_path / "state" / "data" / "weaviate").is_dir()
    stack.up(timeout=90)
    try:
        with connect_to_local(host="127.0.0.1", port=http, grpc_port=grpc_port) as client:
            assert client.collections.exists("Persisted")
    finally:
        stack.down(grace=10)


def test_port_in_use_is_named(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    port = int(env["LORAG_WEAVIATE_HTTP_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        with pytest.raises(PortInUseError, match=f"port {port} \\(weaviate HTTP\\)"):
            LocalStack(env=env, services=()).up(timeout=30)
    assert not (tmp_path / "state" / "pids" / "weaviate.pid").exists()


def test_missing_binary_names_make_setup(tmp_path: Path) -> None:
    env = _stack_env(tmp_path, LORAG_CACHE=str(tmp_path / "empty-cache"))
    env.pop("LORAG_WEAVIATE_BIN", None)
    try:
        with pytest.raises(WeaviateNotInstalledError, match="make setup"):
            LocalStack(env=env, services=()).up()
        result = CliRunner().invoke(app, ["up"], env={**env, "LORAG_WEAVIATE_BIN": ""})
        assert result.exit_code == 1
        assert "make setup" in result.output
    finally:
        LocalStack(env=env, services=()).down(grace=5)  # Only does something if the check above failed.


# -- services --------------------------------------------------------------------------------------------------


def test_service_gets_addresses_and_reports_serving(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    root, base = running
    env = dict(base)
    spec = _fake(root, env, monkeypatch, "alpha")
    # Asking for another Weaviate port while one runs: services are still pointed at the one that runs.
    env["LORAG_WEAVIATE_HTTP_PORT"] = str(_free_port())
    stack = LocalStack(env=env, services=[spec])
    rows = {r.name: r for r in stack.up(timeout=60)}
    assert rows["weaviate"].health is Health.SERVING
    alpha = rows["alpha"]
    assert alpha.health is Health.SERVING
    assert alpha.address == f"127.0.0.1:{env['LORAG_ALPHA_PORT']}"
    assert alpha.endpoints["metrics"] == int(env["LORAG_ALPHA_METRICS_PORT"])

    seen = json.loads((root / "alpha.env.json").read_text())
    assert seen["LORAG_WEAVIATE_HTTP_PORT"] == base["LORAG_WEAVIATE_HTTP_PORT"]
    assert seen["LORAG_WEAVIATE_GRPC_PORT"] == base["LORAG_WEAVIATE_GRPC_PORT"]
    assert seen["LORAG_WEAVIATE_URL"] == f"http://127.0.0.1:{base['LORAG_WEAVIATE_HTTP_PORT']}"
    assert seen["LORAG_ALPHA_PORT"] == env["LORAG_ALPHA_PORT"]

    # The CLI reads the same state; --json is for scripts.
    result = CliRunner().invoke(app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    health = {row["name"]: row["health"] for row in json.loads(result.stdout)}
    assert health["weaviate"] == health["alpha"] == "SERVING"  # Plus any installed service, DOWN here.

    # down stops the service, then Weaviate, and removes both pid files.
    pid = alpha.pid
    assert pid is not None
    assert stack.down(grace=5) == ["alpha", "weaviate"]
    assert not processes.is_running(pid)
    assert {r.name: r.health for r in stack.status()} == {"weaviate": Health.DOWN, "alpha": Health.DOWN}
    assert list((stack.state / "pids").glob("*.pid")) == []
    LocalStack(env=base, services=()).up(timeout=90)  # Weaviate again, for the other tests of this module.


def test_crashing_service_fails_with_its_log(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    root, base = running
    env = dict(base)
    spec = _fake(root, env, monkeypatch, "bravo", mode="crash")
    stack = LocalStack(env=env, services=[spec])
    with pytest.raises(StartupError) as info:
        stack.up(timeout=30)
    assert info.value.component == "bravo"
    assert "exited" in info.value.reason
    assert "boom: LORAG_BRAVO_SETTING is invalid" in info.value.log_tail
    assert not stack.pid_path("bravo").exists()


def test_never_serving_service_times_out(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    root, base = running
    env = dict(base)
    spec = _fake(root, env, monkeypatch, "charlie", mode="not_serving")
    stack = LocalStack(env=env, services=[spec])
    with pytest.raises(StartupError, match="not SERVING") as info:
        stack.up(timeout=3)
    assert "fake service listening" in info.value.log_tail
    assert not stack.pid_path("charlie").exists()
    assert port_is_free(int(env["LORAG_CHARLIE_PORT"]))


def test_service_port_in_use_is_named(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    root, base = running
    env = dict(base)
    spec = _fake(root, env, monkeypatch, "delta")
    port = int(env["LORAG_DELTA_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        with pytest.raises(PortInUseError, match=f"port {port} \\(delta gRPC\\).*LORAG_DELTA_PORT"):
            LocalStack(env=env, services=[spec]).up(timeout=10)


def test_real_embedding_service_comes_up(running: Running) -> None:
    _, base = running
    env = dict(base, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["LORAG_EMBEDDING_PORT"] = str(_free_port())
    env["LORAG_EMBEDDING_METRICS_PORT"] = str(_free_port())
    stack = LocalStack(env=env, services=[ServiceSpec("embedding", 50052)])
    try:
        rows = {r.name: r for r in stack.up(timeout=120)}
        assert rows["embedding"].health is Health.SERVING
    finally:
        stack.stop("embedding", grace=10)
    assert not stack.pid_path("embedding").exists()


# -- building blocks -------------------------------------------------------------------------------------------


def test_picked_weaviate_ports_are_free_distinct_pairs() -> None:
    ports = WeaviatePorts.pick(http=_free_port())
    all_ports = [ports.http, ports.grpc, ports.gossip, ports.data, ports.raft, ports.raft_rpc]
    assert len(set(all_ports)) == 6
    assert ports.data == ports.gossip + 1 and ports.raft_rpc == ports.raft + 1
    assert all(port_is_free(p) for p in all_ports)


def test_pid_reuse_is_not_mistaken_for_our_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = processes.PidRecord(pid=proc.pid, argv=[sys.executable, "-c", "import time; time.sleep(60)"])
        record.write(tmp_path / "x.pid")
        assert processes.PidRecord.read(tmp_path / "x.pid") == record
        assert record.alive()
        assert not processes.is_running(proc.pid, [sys.executable, "-m", "lorag_embedding"])
    finally:
        proc.kill()
        proc.wait()
    assert not record.alive()


def test_terminate_escalates_to_sigkill() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.stdout.close()
    started = time.monotonic()
    assert processes.terminate(proc.pid, grace=0.5)  # Reaps it too, so Popen no longer sees the signal.
    assert 0.5 <= time.monotonic() - started < 5
    assert not processes.exists(proc.pid)
    assert not processes.terminate(proc.pid)
    proc.wait(timeout=5)
