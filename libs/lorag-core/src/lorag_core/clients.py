"""One factory for channels to lorag services: retries from the contract, deadlines propagated, traced, secured.

Every call to a lorag service goes through a channel made here (the SDK, ``lorag_client``, is the only caller), so:

* each RPC's retry policy comes from its contract: an RPC declaring ``option idempotency_level`` (NO_SIDE_EFFECTS
  or IDEMPOTENT) is retried on UNAVAILABLE with exponential backoff; one declaring none (Generate, Ask, the ingest
  stream, CreateTrainingJob) is never retried. One RPC has one policy, whoever calls it;
* a caller's deadline bounds the whole tree of calls (a call never waits past it);
* each hop appears as a child span in the caller's trace;
* transport security (TLS, a client certificate, call credentials) is decided in one place,
  :class:`ChannelSecurity`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from lorag_core.interceptors import propagated_timeout

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
RETRY_ATTEMPTS = 4

_RETRIED_LEVELS = (MethodOptions.NO_SIDE_EFFECTS, MethodOptions.IDEMPOTENT)


def is_retryable(method: MethodDescriptor) -> bool:
    """Whether the contract declares ``method`` safe to repeat (``option idempotency_level``)."""
    level: int = method.GetOptions().idempotency_level
    return level in _RETRIED_LEVELS


def retry_service_config(services: Sequence[ServiceDescriptor], max_attempts: int = RETRY_ATTEMPTS) -> dict[str, Any]:
    """A gRPC service config retrying UNAVAILABLE, with backoff, for exactly the RPCs of ``services`` whose
    contract declares them idempotent or free of side effects."""
    names = [
        {"service": service.full_name, "method": method.name}
        for service in services
        for method in service.methods
        if is_retryable(method)
    ]
    if not names:
        return {}
    return {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }


@dataclass(frozen=True)
class ChannelSecurity:
    """How a channel authenticates the server and itself: plaintext, or TLS with an optional CA bundle, client
    certificate (mTLS) and call credentials (a token sent with every call).

    :meth:`from_env` reads ``LORAG_TLS`` (``1``/``true`` for TLS with the system's roots),
    ``LORAG_TLS_CA_FILE`` (a PEM bundle to trust; implies TLS), ``LORAG_TLS_CERT_FILE`` and
    ``LORAG_TLS_KEY_FILE`` (the client's certificate and key, both or neither) and
    ``LORAG_TLS_SERVER_NAME`` (the name the server's certificate must carry, when it differs from the host dialled).
    """

    tls: bool = False
    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None
    call_credentials: grpc.CallCredentials | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ChannelSecurity:
        env = os.environ if environ is None else environ
        ca, cert, key = (env.get(f"LORAG_TLS_{name}_FILE") or None for name in ("CA", "CERT", "KEY"))
        if (cert is None) != (key is None):
            raise ValueError("set both LORAG_TLS_CERT_FILE and LORAG_TLS_KEY_FILE, or neither")
        tls = env.get("LORAG_TLS", "").strip().lower() in ("1", "true", "yes") or bool(ca or cert)
        return cls(
            tls=tls,
            root_certificates=Path(ca).read_bytes() if ca else None,
            certificate_chain=Path(cert).read_bytes() if cert else None,
            private_key=Path(key).read_bytes() if key else None,
            server_name=env.get("LORAG_TLS_SERVER_NAME") or None,
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The channel credentials to dial with; ``None`` means plaintext."""
        if not self.tls:
            if self.call_credentials is not None:
                raise ValueError("call credentials need TLS: a token is never sent over plaintext")
            return None
        channel = grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )
        if self.call_credentials is not None:
            return grpc.composite_channel_credentials(channel, self.call_credentials)
        return channel


# grpc-stubs makes the interceptor bases generic for type checkers only; at run time they take no parameters.
if TYPE_CHECKING:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor[Any, Any]
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor[Any, Any]
    _StreamStream = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _UnaryUnary = grpc.aio.UnaryUnaryClientInterceptor
    _UnaryStream = grpc.aio.UnaryStreamClientInterceptor
    _StreamUnary = grpc.aio.StreamUnaryClientInterceptor
    _StreamStream = grpc.aio.StreamStreamClientInterceptor


class _DeadlinePropagation(_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream):
    """Cap each outgoing call's timeout by what is left of the deadline of the call being served."""

    @staticmethod
    def _details(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=propagated_timeout(details.timeout),
            metadata=details.metadata,
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def create_channel(
    target: str,
    *,
    services: Sequence[ServiceDescriptor] = (),
    security: ChannelSecurity | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (``host:port``) with lorag's client interceptors and options.

    ``services`` are the contracts called over it: their declared idempotency decides which RPCs are retried.
    ``security`` defaults to :meth:`ChannelSecurity.from_env`.
    """
    security = ChannelSecurity.from_env() if security is None else security
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    config = retry_service_config(services)
    if config:
        options.append(("grpc.service_config", json.dumps(config)))
    if security.server_name:
        options.append(("grpc.ssl_target_name_override", security.server_name))
    traced: list[Any] = aio_client_interceptors()  # type: ignore[no-untyped-call]  # OpenTelemetry's is untyped
    interceptors: list[Any] = [_DeadlinePropagation(), *traced]
    credentials = security.credentials()
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


__all__ = ["ChannelSecurity", "create_channel", "is_retryable", "retry_service_config"]
