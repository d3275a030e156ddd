"""Health probe for containers: ``python -m lorag_core.probe [--address HOST:PORT] [--service NAME]``.

Exits 0 when the standard ``grpc.health.v1`` service answers SERVING and 1 otherwise (NOT_SERVING while models
load or after SIGTERM, unknown service, nothing listening, timeout), so a Docker HEALTHCHECK or any exec probe can
gate traffic on real readiness. Images ship no grpcurl/grpc_health_probe binary; the service's own Python and
grpcio suffice. Kubernetes uses its native ``grpc:`` probes instead.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lorag_core.clients import ChannelSecurity

DEFAULT_ADDRESS = "127.0.0.1:50051"


def health(address: str, service: str = "", timeout: float = 3.0) -> tuple[int | None, str]:
    """The ``grpc.health.v1`` status of ``service`` ('' = the whole server) at ``address``, and what was seen;
    ``None`` when nothing answered. The channel is secured as every lorag client's (``ChannelSecurity``)."""
    credentials = ChannelSecurity.from_env().credentials()
    try:
        with grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        code, details = getattr(exc, "code", None), getattr(exc, "details", None)
        name = code().name if callable(code) else "ERROR"
        return None, f"{name}: {details() if callable(details) else exc}"
    return reply.status, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def check(address: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """Ask ``address`` for the health of ``service`` ('' = the whole server); return (serving, what was seen)."""
    status, seen = health(address, service, timeout)
    return status == health_pb2.HealthCheckResponse.SERVING, seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lorag_core.probe", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address",
        default=os.environ.get("LORAG_PROBE_ADDRESS", DEFAULT_ADDRESS),
        help="host:port of the gRPC server (default: $LORAG_PROBE_ADDRESS, else %(default)s)",
    )
    parser.add_argument("--service", default="", help="health service name; empty (default) = the whole server")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    args = parser.parse_args(argv)
    serving, seen = check(args.address, args.service, args.timeout)
    target = f"{args.address} {args.service or '(server)'}"
    print(f"{target}: {seen}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
