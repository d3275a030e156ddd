"""One factory for channels to lorag services: retries for idempotent calls, deadlines propagated, traced.

Every downstream call a service makes goes through :func:`create_channel`, so a caller's deadline bounds the
whole tree of calls (a call never waits past it) and each hop appears as a child span in the caller's trace.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from lorag_core.interceptors import propagated_timeout

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def retry_service_config(services: Sequence[str], max_attempts: int = 4) -> dict[str, Any]:
    """A gRPC service config retrying UNAVAILABLE with exponential backoff, for idempotent ``services``.

    Only list services whose every RPC is safe to repeat (reads, or writes keyed by deterministic ids).
    """
    return {
        "methodConfig": [
            {
                "name": [{"service": name} for name in services],
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


class _DeadlinePropagation(
    grpc.aio.UnaryUnaryClientInterceptor,
    grpc.aio.UnaryStreamClientInterceptor,
    grpc.aio.StreamUnaryClientInterceptor,
    grpc.aio.StreamStreamClientInterceptor,
):
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

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


def create_channel(
    target: str,
    *,
    retry_services: Sequence[str] = (),
    tls: bool = False,
    root_certificates: bytes | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (``host:port``) with lorag's client interceptors and options."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if retry_services:
        options.append(("grpc.service_config", json.dumps(retry_service_config(retry_services))))
    interceptors = [_DeadlinePropagation(), *aio_client_interceptors()]
    if tls:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
