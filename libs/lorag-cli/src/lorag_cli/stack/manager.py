"""The local stack behind `lorag up` / `status` / `down`: Weaviate plus the installed lorag services.

Components run detached (own session, output to logs/<name>.log) so they outlive the CLI; what a later command
needs is on disk under the state folder: pids/<name>.pid (pid, argv, endpoints) and data/weaviate (persisted).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from grpc_health.v1 import health_pb2

from lorag_cli.stack import processes
from lorag_cli.stack.components import SERVICES, ServiceConfig, ServiceSpec, WeaviateConfig, state_dir
from lorag_cli.stack.errors import StackError, StartupError
from lorag_cli.stack.ports import check_ports_free
from lorag_cli.stack.processes import PidRecord
from lorag_cli.stack.weaviate import WeaviateServer, find_weaviate_binary, is_ready, weaviate_env
from lorag_core import probe

WEAVIATE = "weaviate"
DEFAULT_TIMEOUT = 120.0  # Long enough for a service to load its model on CPU.
DEFAULT_GRACE = 15.0
LOG_TAIL_LINES = 40

EventSink = Callable[[str], None]


class Health(StrEnum):
    """A component's health as `status` reports it."""

    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    DOWN = "DOWN"


@dataclass(frozen=True)
class ComponentStatus:
    """One row of `lorag status`."""

    name: str
    health: Health
    pid: int | None
    address: str
    log: Path
    endpoints: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["health"] = self.health.value
        data["log"] = str(self.log)
        return data


def grpc_health(address: str, timeout: float = 1.0) -> Health | None:
    """The standard health check (service "") at `address`; None if nothing answers."""
    status, _ = probe.health(address, timeout=timeout)
    if status is None:
        return None
    return Health.SERVING if status == health_pb2.HealthCheckResponse.SERVING else Health.NOT_SERVING


def _ignore(_: str) -> None:
    pass


def _running_weaviate(record: PidRecord, cfg: WeaviateConfig) -> WeaviateConfig:
    """The host and ports a running Weaviate was started with, as its pid record tells."""
    try:
        http = urlsplit(str(record.endpoints["http"]))
        grpc_port = int(str(record.endpoints["grpc"]).rpartition(":")[2])
        return replace(cfg, host=http.hostname or cfg.host, http_port=http.port or cfg.http_port, grpc_port=grpc_port)
    except (KeyError, ValueError):
        return cfg


class LocalStack:
    """Starts, inspects and stops the local stack. `env` (default os.environ) supplies every override."""

    def __init__(
        self,
        state: Path | str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        services: Sequence[ServiceSpec] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.state = Path(state) if state is not None else state_dir(self.env)
        self.python = python
        self.weaviate = WeaviateConfig.from_env(self.env)
        specs = SERVICES if services is None else services
        self.services = [ServiceConfig.from_env(s, self.env) for s in specs if s.installed()]

    # -- layout ----------------------------------------------------------------------------------------------
    @property
    def weaviate_data_dir(self) -> Path:
        return self.state / "data" / WEAVIATE

    def log_path(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.state / "pids" / f"{name}.pid"

    def component_names(self) -> list[str]:
        """Weaviate, the configured services, then any other component a pid file says is still around."""
        names = [WEAVIATE] + [s.name for s in self.services]
        pids = self.state / "pids"
        if pids.is_dir():
            names += sorted(p.stem for p in pids.glob("*.pid") if p.stem not in names)
        return names

    def service_env(self) -> dict[str, str]:
        """The environment every service starts with: ours plus every component's address."""
        env = dict(self.env)
        env.update(weaviate_env(self.weaviate.host, self.weaviate.http_port, self.weaviate.grpc_port))
        for svc in self.services:
            env.update(svc.env())
        training = next((svc for svc in self.services if svc.name == "training"), None)
        if training is not None:  # generation resolves "name@alias" adapters through the training registry
            env.setdefault("LORAG_GENERATION_TRAINING_ADDRESS", training.address)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _record(self, name: str) -> PidRecord | None:
        return PidRecord.read(self.pid_path(name))

    def _live_record(self, name: str) -> PidRecord | None:
        """The pid record if its process still runs; a stale file is removed."""
        record = self._record(name)
        if record is None:
            return None
        if record.alive():
            return record
        self.pid_path(name).unlink(missing_ok=True)
        return None

    # -- up --------------------------------------------------------------------------------------------------
    def up(self, timeout: float = DEFAULT_TIMEOUT, on_event: EventSink = _ignore) -> list[ComponentStatus]:
        """Start whatever is not running, wait until all are healthy, and return their status.

        Raises StartupError (with the failing component's log tail) if one does not become healthy; that one is
        stopped, the others keep running (`down` stops them).
        """
        for sub in ("logs", "pids", "data"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        self._up_weaviate(timeout, on_event)
        started: list[tuple[ServiceConfig, float]] = []
        for svc in self.services:  # Start them all, then wait: model loads overlap.
            self._start_service(svc, on_event)
            started.append((svc, time.monotonic()))
        for svc, t0 in started:
            self._wait_service(svc, t0 + timeout, timeout)
            on_event(f"{svc.name} serving on {svc.address}")
        return self.status()

    def _up_weaviate(self, timeout: float, on_event: EventSink) -> None:
        cfg = self.weaviate
        record = self._live_record(WEAVIATE)
        if record is not None:
            running = _running_weaviate(record, cfg)
            if running != cfg:
                on_event("weaviate keeps the ports of its earlier start; `lorag down` first to change them")
                self.weaviate = running  # Services must reach the Weaviate that actually runs.
            url = running.http_url
            on_event(f"weaviate already running (pid {record.pid}), waiting until ready at {url}")
            self._wait(WEAVIATE, record, lambda: is_ready(url), timeout, f"not ready at {url}")
            return
        server = WeaviateServer(
            self.weaviate_data_dir,
            host=cfg.host,
            http_port=cfg.http_port,
            grpc_port=cfg.grpc_port,
            gossip_port=cfg.gossip_port,
            raft_port=cfg.raft_port,
            log_path=self.log_path(WEAVIATE),
            binary=find_weaviate_binary(self.env),
        )
        on_event(f"starting weaviate (log: {server.log_path})")
        pid = server.start(detach=True)
        PidRecord(
            pid=pid,
            argv=server.argv(),
            endpoints={"http": server.http_url, "grpc": f"{cfg.host}:{cfg.grpc_port}"},
        ).write(self.pid_path(WEAVIATE))
        try:
            server.wait_ready(timeout)
        except StartupError:
            self.stop(WEAVIATE, DEFAULT_GRACE)
            raise
        on_event(f"weaviate ready at {server.http_url} (gRPC {cfg.host}:{cfg.grpc_port})")

    def _start_service(self, svc: ServiceConfig, on_event: EventSink) -> bool:
        """Launch one service unless it already runs; True if launched."""
        record = self._live_record(svc.name)
        if record is not None:
            on_event(f"{svc.name} already running (pid {record.pid})")
            return False
        p = svc.spec.env_prefix
        check_ports_free({f"{svc.name} gRPC": svc.port}, hint=f"set {p}PORT to a free port")
        check_ports_free({f"{svc.name} metrics": svc.metrics_port}, hint=f"set {p}METRICS_PORT to a free port")
        argv = [self.python, "-m", svc.spec.module_name]
        log_path = self.log_path(svc.name)
        on_event(f"starting {svc.name} (log: {log_path})")
        with processes.open_log(log_path, f"{svc.name} " + " ".join(argv)) as log:
            try:
                proc = processes.spawn(argv, env=self.service_env(), log=log)
            except OSError as exc:
                raise StackError(f"cannot start {svc.name} ({' '.join(argv)}): {exc}") from exc
        PidRecord(pid=proc.pid, argv=argv, endpoints={"grpc": svc.address, "metrics": svc.metrics_port}).write(
            self.pid_path(svc.name)
        )
        return True

    def _wait_service(self, svc: ServiceConfig, deadline: float, timeout: float) -> None:
        record = self._record(svc.name)
        if record is None:  # pragma: no cover - written just before
            raise StartupError(svc.name, "its pid file vanished while starting")
        address = str(record.endpoints.get("grpc", svc.address))
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            self._wait(
                svc.name,
                record,
                lambda: grpc_health(address) is Health.SERVING,
                remaining,
                f"not SERVING at {address} after {timeout:.0f} s",
            )
        except StartupError:
            self.stop(svc.name, DEFAULT_GRACE)
            raise

    def _wait(self, name: str, record: PidRecord, healthy: Callable[[], bool], timeout: float, reason: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not record.alive():
                code = processes.returncode(record.pid)
                how = f"exited with code {code}" if code is not None else "exited"
                raise StartupError(name, f"{how} while starting", processes.tail(self.log_path(name), LOG_TAIL_LINES))
            if healthy():
                return
            if time.monotonic() >= deadline:
                raise StartupError(name, reason, processes.tail(self.log_path(name), LOG_TAIL_LINES))
            time.sleep(0.25)

    # -- status ----------------------------------------------------------------------------------------------
    def status(self) -> list[ComponentStatus]:
        """Each component's pid, address and health; probes the address even without a pid file."""
        return [self._status(name) for name in self.component_names()]

    def _status(self, name: str) -> ComponentStatus:
        record = self._record(name)
        alive = record is not None and record.alive()
        pid = record.pid if alive and record is not None else None
        if name == WEAVIATE:
            endpoints: dict[str, Any] = {
                "http": self.weaviate.http_url,
                "grpc": f"{self.weaviate.host}:{self.weaviate.grpc_port}",
            }
        else:
            svc = next((s for s in self.services if s.name == name), None)
            endpoints = {"grpc": svc.address, "metrics": svc.metrics_port} if svc else {}
        if alive and record is not None:
            endpoints.update(record.endpoints)
        if name == WEAVIATE:
            address = str(endpoints["http"])
            probe: Health | None = Health.SERVING if is_ready(address) else None
        else:
            address = str(endpoints.get("grpc", ""))
            probe = grpc_health(address) if address else None
        if probe is not None:
            health = probe
        else:
            health = Health.NOT_SERVING if alive else Health.DOWN
        return ComponentStatus(name, health, pid, address, self.log_path(name), endpoints)

    # -- down ------------------------------------------------------------------------------------------------
    def down(self, grace: float = DEFAULT_GRACE, on_event: EventSink = _ignore) -> list[str]:
        """Stop services (reverse start order), then Weaviate; returns the names actually stopped."""
        names = [n for n in self.component_names() if n != WEAVIATE]
        stopped = []
        for name in [*reversed(names), WEAVIATE]:
            record = self._record(name)
            if record is None:
                continue
            if self.stop(name, grace):
                on_event(f"stopped {name} (pid {record.pid})")
                stopped.append(name)
        return stopped

    def stop(self, name: str, grace: float = DEFAULT_GRACE) -> bool:
        """Stop one component by its pid file and remove the file; True if a process was stopped."""
        record = self._record(name)
        was_running = record is not None and record.alive()
        if record is not None and was_running:
            processes.terminate(record.pid, grace)
        self.pid_path(name).unlink(missing_ok=True)
        return was_running
