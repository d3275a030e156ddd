"""A real Weaviate server as a local process, for tests (one per session) and for `lorag up`.

No Docker here: the single-node binary is built once by `make setup` into the lorag cache and started with the
environment documented in docs (one node, no modules, anonymous access, our own vectors).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from lorag_cli.stack import processes
from lorag_cli.stack.errors import StackError, StartupError, WeaviateNotInstalledError
from lorag_cli.stack.ports import PortPicker, check_ports_free

BINARY_NAME = "weaviate-server"
READY_PATH = "/v1/.well-known/ready"
DEFAULT_HOST = "127.0.0.1"


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where `make setup` keeps slow builds: $LORAG_CACHE, else ~/.cache/lorag."""
    env = os.environ if env is None else env
    value = env.get("LORAG_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "lorag"


def find_weaviate_binary(env: Mapping[str, str] | None = None) -> Path:
    """The Weaviate binary: $LORAG_WEAVIATE_BIN, else $LORAG_CACHE/bin/weaviate-server."""
    env = os.environ if env is None else env
    explicit = env.get("LORAG_WEAVIATE_BIN")
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise WeaviateNotInstalledError(
                f"LORAG_WEAVIATE_BIN={explicit} is not an executable file; unset it to use the one `make setup` builds"
            )
        return path
    path = cache_dir(env) / "bin" / BINARY_NAME
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise WeaviateNotInstalledError(
            f"Weaviate binary not found at {path}; run `make setup` to build it (once, about 5 minutes), "
            "or point LORAG_WEAVIATE_BIN at a weaviate-server binary"
        )
    return path


def weaviate_env(host: str, http_port: int, grpc_port: int) -> dict[str, str]:
    """The LORAG_WEAVIATE_* variables a lorag service reads to reach this Weaviate."""
    return {
        "LORAG_WEAVIATE_HOST": host,
        "LORAG_WEAVIATE_HTTP_PORT": str(http_port),
        "LORAG_WEAVIATE_GRPC_PORT": str(grpc_port),
        "LORAG_WEAVIATE_URL": f"http://{host}:{http_port}",
    }


def is_ready(http_url: str, timeout: float = 1.0) -> bool:
    """True if the Weaviate at `http_url` answers its readiness probe with 2xx."""
    try:
        return httpx.get(http_url + READY_PATH, timeout=timeout).is_success
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class WeaviatePorts:
    """All ports one node binds; gossip+1 (cluster data) and raft+1 (raft internal RPC) are implied."""

    http: int
    grpc: int
    gossip: int
    raft: int

    @property
    def data(self) -> int:
        return self.gossip + 1

    @property
    def raft_rpc(self) -> int:
        return self.raft + 1

    def by_role(self) -> dict[str, int]:
        """Role -> port, for naming a taken port in an error."""
        return {
            "weaviate HTTP": self.http,
            "weaviate gRPC": self.grpc,
            "weaviate gossip": self.gossip,
            "weaviate cluster data (gossip+1)": self.data,
            "weaviate raft": self.raft,
            "weaviate raft RPC (raft+1)": self.raft_rpc,
        }

    @classmethod
    def pick(
        cls,
        http: int | None = None,
        grpc: int | None = None,
        gossip: int | None = None,
        raft: int | None = None,
    ) -> WeaviatePorts:
        """Keep the given ports, choose free ones for the rest (pairs for gossip and raft)."""
        given = {p for p in (http, grpc, gossip, raft) if p is not None}
        given |= {p + 1 for p in (gossip, raft) if p is not None}
        with PortPicker() as picker:

            def fresh(pick: Callable[[], int]) -> int:
                while True:
                    port = pick()
                    if port not in given and port + 1 not in given:
                        return port

            return cls(
                http=http if http is not None else fresh(picker.single),
                grpc=grpc if grpc is not None else fresh(picker.single),
                gossip=gossip if gossip is not None else fresh(lambda: picker.pair(udp_first=True)),
                raft=raft if raft is not None else fresh(picker.pair),
            )


class WeaviateServer(processes.ManagedServer):
    """One single-node Weaviate process with its own data dir and log file.

    Use as a context manager (start, wait until ready, stop), or `start(detach=True)` for a server that outlives
    this Python process (`lorag up`): it runs in its own session and is stopped later by pid.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        host: str = DEFAULT_HOST,
        http_port: int | None = None,
        grpc_port: int | None = None,
        gossip_port: int | None = None,
        raft_port: int | None = None,
        log_path: Path | str | None = None,
        binary: Path | str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.binary = Path(binary) if binary is not None else find_weaviate_binary()
        self.ports = WeaviatePorts.pick(http_port, grpc_port, gossip_port, raft_port)
        self.log_path = Path(log_path) if log_path is not None else self.data_dir.with_name(self.data_dir.name + ".log")
        self._extra_env = dict(extra_env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    # -- where it listens ------------------------------------------------------------------------------------
    @property
    def http_port(self) -> int:
        return self.ports.http

    @property
    def grpc_port(self) -> int:
        return self.ports.grpc

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def lorag_env(self) -> dict[str, str]:
        """LORAG_WEAVIATE_* variables for a lorag service (or client) that should use this server."""
        return weaviate_env(self.host, self.ports.http, self.ports.grpc)

    # -- process ---------------------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        return [str(self.binary), "--host", self.host, "--port", str(self.ports.http), "--scheme", "http"]

    def env(self) -> dict[str, str]:
        """Exactly the documented single-node configuration (no inherited variables change its behaviour)."""
        p = self.ports
        env = {
            "PERSISTENCE_DATA_PATH": str(self.data_dir),
            "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
            "DEFAULT_VECTORIZER_MODULE": "none",
            "ENABLE_MODULES": "",
            "DISABLE_TELEMETRY": "true",
            "GRPC_PORT": str(p.grpc),
            "CLUSTER_HOSTNAME": "node1",
            "CLUSTER_IN_LOCALHOST": "true",
            "CLUSTER_GOSSIP_BIND_PORT": str(p.gossip),
            "CLUSTER_DATA_BIND_PORT": str(p.data),
            "RAFT_PORT": str(p.raft),
            "RAFT_INTERNAL_RPC_PORT": str(p.raft_rpc),
            "RAFT_BOOTSTRAP_EXPECT": "1",
            "RAFT_JOIN": f"node1:{p.raft}",
        }
        env.update(self._extra_env)
        return env

    def start(self, *, detach: bool = False) -> int:
        """Launch the server (not yet ready: call `wait_ready`); returns its pid.

        `detach` puts it in its own session so it survives this process and a Ctrl-C in its terminal.
        """
        if self._proc is not None and self._proc.poll() is None:
            raise StackError(f"weaviate is already running (pid {self._proc.pid})")
        check_ports_free(
            self.ports.by_role(),
            hint="choose other ports (LORAG_WEAVIATE_*_PORT) or stop the process holding it",
            udp_roles=("weaviate gossip",),
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the log descriptor; ours is closed at once.
        with processes.open_log(self.log_path, "weaviate " + " ".join(self.argv())) as log:
            try:
                self._proc = processes.spawn(self.argv(), env=self.env(), log=log, cwd=self.data_dir, detach=detach)
            except OSError as exc:
                raise StackError(f"cannot start weaviate from {self.binary}: {exc}") from exc
        return self._proc.pid

    def is_ready(self) -> bool:
        return is_ready(self.http_url)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until GET /v1/.well-known/ready succeeds; raise StartupError (with the log tail) otherwise."""
        if self._proc is None:
            raise StackError("weaviate was not started")
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise StartupError("weaviate", f"exited with code {code} while starting", self.log_tail())
                try:
                    if client.get(self.http_url + READY_PATH).is_success:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() >= deadline:
                    raise StartupError(
                        "weaviate", f"not ready at {self.http_url} after {timeout:.0f} s", self.log_tail()
                    )
                time.sleep(0.2)

    def __repr__(self) -> str:
        return f"WeaviateServer(http={self.http_url}, grpc={self.host}:{self.grpc_port}, data={self.data_dir})"
