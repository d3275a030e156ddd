"""The local stack: a real Weaviate launcher and the manager behind `lorag up` / `status` / `down`."""

from lorag_cli.stack.components import (
    DEFAULT_STATE_DIR,
    SERVICES,
    ServiceConfig,
    ServiceSpec,
    WeaviateConfig,
    state_dir,
)
from lorag_cli.stack.errors import PortInUseError, StackError, StartupError, WeaviateNotInstalledError
from lorag_cli.stack.manager import ComponentStatus, Health, LocalStack, grpc_health
from lorag_cli.stack.ports import PortPicker, check_ports_free, port_is_free
from lorag_cli.stack.weaviate import WeaviatePorts, WeaviateServer, find_weaviate_binary, is_ready, weaviate_env

__all__ = [
    "DEFAULT_STATE_DIR",
    "SERVICES",
    "ComponentStatus",
    "Health",
    "LocalStack",
    "PortInUseError",
    "PortPicker",
    "ServiceConfig",
    "ServiceSpec",
    "StackError",
    "StartupError",
    "WeaviateConfig",
    "WeaviateNotInstalledError",
    "WeaviatePorts",
    "WeaviateServer",
    "check_ports_free",
    "find_weaviate_binary",
    "grpc_health",
    "is_ready",
    "port_is_free",
    "state_dir",
    "weaviate_env",
]
