"""The table of what `lorag up` runs, and where each part listens.

Weaviate comes first; then every lorag service whose module is installed, in dependency order. Adding a service
is one `ServiceSpec` line; a service not installed yet (no `lorag_<name>.__main__`) is skipped, not an error.
Every address is overridable by environment, and every service receives every address, so a service finds its
peers from its own environment without knowing it runs under `lorag up`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lorag_cli.stack.errors import StackError

# One constant for the state folder; $LORAG_HOME overrides it.
DEFAULT_STATE_DIR = Path("~/.local/state/lorag")
DEFAULT_HOST = "127.0.0.1"
METRICS_BASE_PORT = 9464
GATEWAY_PORT = 50051  # Service ports count up from here; metrics ports count up from METRICS_BASE_PORT alike.
WEAVIATE_HTTP_PORT = 8079
WEAVIATE_GRPC_PORT = 50050
# Weaviate's own defaults for its internal cluster ports (each uses the next port too).
WEAVIATE_GOSSIP_PORT = 7946
WEAVIATE_RAFT_PORT = 8300


@dataclass(frozen=True)
class ServiceSpec:
    """One lorag gRPC service, started as `python -m <module>`."""

    name: str
    port: int
    module: str | None = None  # Defaults to lorag_<name>.

    @property
    def module_name(self) -> str:
        return self.module or f"lorag_{self.name}"

    @property
    def env_prefix(self) -> str:
        return f"LORAG_{self.name.upper()}_"

    @property
    def metrics_port(self) -> int:
        """9464 for the gateway, 9465 for embedding, ...: fixed by the service's number, not the start order."""
        return METRICS_BASE_PORT + max(self.port - GATEWAY_PORT, 0)

    def installed(self) -> bool:
        """True if `python -m <module>` can run here; looks at files only, so no service code is imported."""
        try:
            spec = importlib.util.find_spec(self.module_name)
        except (ImportError, ValueError):
            return False
        if spec is None:
            return False
        if spec.submodule_search_locations is None:  # A plain module runs as itself.
            return True
        return any((Path(loc) / "__main__.py").is_file() for loc in spec.submodule_search_locations)


# Start order: dependencies first. Default ports from the design (§7).
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("embedding", 50052),
    ServiceSpec("indexer", 50053),
    ServiceSpec("retrieval", 50054),
    ServiceSpec("generation", 50055),
    ServiceSpec("training", 50056),
    ServiceSpec("gateway", 50051),
)


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The local stack's state folder: $LORAG_HOME, else ~/.local/state/lorag."""
    env = os.environ if env is None else env
    return Path(env.get("LORAG_HOME") or DEFAULT_STATE_DIR).expanduser()


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise StackError(f"{name}={port} is outside 1..65535")
    return port


@dataclass(frozen=True)
class WeaviateConfig:
    """Where the stack's Weaviate listens (LORAG_WEAVIATE_{HOST,HTTP_PORT,GRPC_PORT,GOSSIP_PORT,RAFT_PORT})."""

    host: str
    http_port: int
    grpc_port: int
    gossip_port: int
    raft_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WeaviateConfig:
        return cls(
            host=env.get("LORAG_WEAVIATE_HOST") or DEFAULT_HOST,
            http_port=_port(env, "LORAG_WEAVIATE_HTTP_PORT", WEAVIATE_HTTP_PORT),
            grpc_port=_port(env, "LORAG_WEAVIATE_GRPC_PORT", WEAVIATE_GRPC_PORT),
            gossip_port=_port(env, "LORAG_WEAVIATE_GOSSIP_PORT", WEAVIATE_GOSSIP_PORT),
            raft_port=_port(env, "LORAG_WEAVIATE_RAFT_PORT", WEAVIATE_RAFT_PORT),
        )

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"


@dataclass(frozen=True)
class ServiceConfig:
    """Where one service listens (LORAG_<SVC>_HOST, LORAG_<SVC>_PORT, LORAG_<SVC>_METRICS_PORT)."""

    spec: ServiceSpec
    host: str
    port: int
    metrics_port: int

    @classmethod
    def from_env(cls, spec: ServiceSpec, env: Mapping[str, str]) -> ServiceConfig:
        p = spec.env_prefix
        return cls(
            spec=spec,
            host=env.get(p + "HOST") or DEFAULT_HOST,
            port=_port(env, p + "PORT", spec.port),
            metrics_port=_port(env, p + "METRICS_PORT", spec.metrics_port),
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        p = self.spec.env_prefix
        return {p + "HOST": self.host, p + "PORT": str(self.port), p + "METRICS_PORT": str(self.metrics_port)}
