"""A private local stack: Weaviate and lorag services on free ports with their own state folder.

Tests and benchmarks start one beside a user's own `lorag up` without touching it: the environment drops every
lorag address, port and Weaviate setting (and any OTLP collector) the user may have set, and picks free ports.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from lorag_cli.stack.ports import PortPicker
from lorag_cli.stack.weaviate import WeaviatePorts


def private_env(state: Path, services: Sequence[str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ minus the user's lorag addresses, ports, Weaviate and OTEL settings, plus free ports for each of
    ``services`` (gRPC and metrics) and for Weaviate, then ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not (key.startswith("LORAG_") and key.endswith(("_ADDRESS", "_HOST", "_PORT")))
        and not (key.startswith("LORAG_WEAVIATE_") and key != "LORAG_WEAVIATE_BIN")
        and not key.startswith("OTEL_")
        and key != "LORAG_HOME"
    }
    env.update({"LORAG_HOME": str(state), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    weaviate = WeaviatePorts.pick()  # Weaviate also binds gossip + 1 and raft + 1
    env.update(
        {
            "LORAG_WEAVIATE_HTTP_PORT": str(weaviate.http),
            "LORAG_WEAVIATE_GRPC_PORT": str(weaviate.grpc),
            "LORAG_WEAVIATE_GOSSIP_PORT": str(weaviate.gossip),
            "LORAG_WEAVIATE_RAFT_PORT": str(weaviate.raft),
        }
    )
    reserved = {weaviate.http, weaviate.grpc, weaviate.gossip, weaviate.data, weaviate.raft, weaviate.raft_rpc}
    with PortPicker() as picker:
        for name in services:
            for suffix in ("PORT", "METRICS_PORT"):
                while (port := picker.single()) in reserved:
                    pass
                env[f"LORAG_{name.upper()}_{suffix}"] = str(port)
    env.update(extra or {})
    return env
