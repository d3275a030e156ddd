"""Where each lorag service listens by default, and how a caller overrides it.

Defaults are the local stack's (DESIGN §7). ``LORAG_<SVC>_ADDRESS`` (``host:port``) points a client elsewhere;
otherwise ``LORAG_<SVC>_HOST`` and ``LORAG_<SVC>_PORT``, which the service itself also reads, are combined.
"""

from __future__ import annotations

import os

DEFAULT_HOST = "127.0.0.1"

# Service name -> default gRPC port.
DEFAULT_PORTS: dict[str, int] = {
    "gateway": 50051,
    "embedding": 50052,
    "indexer": 50053,
    "retrieval": 50054,
    "generation": 50055,
    "training": 50056,
}

# Prometheus scrape ports start here, one per service in DEFAULT_PORTS order.
METRICS_BASE_PORT = 9464


def default_metrics_port(service: str) -> int:
    return METRICS_BASE_PORT + list(DEFAULT_PORTS).index(service)


def address(service: str) -> str:
    """The ``host:port`` a client should dial for ``service``, honouring the environment."""
    if service not in DEFAULT_PORTS:
        raise ValueError(f"unknown service {service!r}; known: {', '.join(DEFAULT_PORTS)}")
    prefix = f"LORAG_{service.upper()}_"
    explicit = os.environ.get(prefix + "ADDRESS")
    if explicit:
        return explicit
    host = os.environ.get(prefix + "HOST", DEFAULT_HOST)
    if host in ("0.0.0.0", "::"):
        host = DEFAULT_HOST
    port = os.environ.get(prefix + "PORT", str(DEFAULT_PORTS[service]))
    return f"{host}:{port}"
