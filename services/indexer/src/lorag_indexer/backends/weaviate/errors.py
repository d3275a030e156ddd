"""Weaviate's failures in lorag's terms, classified by the exception's type and status wherever the client gives them.

weaviate-client (v4) raises its own exceptions: ``UnexpectedStatusCodeError`` (with the HTTP ``status_code``) for
REST calls, ``InsufficientPermissionsError`` for 403 and gRPC PERMISSION_DENIED, ``WeaviateConnectionError`` /
``WeaviateTimeoutError`` / ``WeaviateClosedClientError`` for transport problems, and for gRPC calls a
``WeaviateQueryError`` subclass raised while handling the ``grpc.aio.AioRpcError`` (so the gRPC status is on the
exception chain). Weaviate's gRPC API answers a missing collection or tenant with status UNKNOWN and a sentence,
and a batch's per-object errors are sentences too: only there is the text read (:func:`not_found_in_message`).
"""

from __future__ import annotations

import grpc
import httpx
from weaviate.exceptions import (
    AuthenticationFailedError,
    InsufficientPermissionsError,
    ObjectAlreadyExistsError,
    ResponseCannotBeDecodedError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateRetryError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from lorag_core.errors import AlreadyExists, LoragError, NotFound, Unavailable
from lorag_core.telemetry import get_logger

log = get_logger(__name__)

DEPENDENCY = {"dependency": "weaviate"}

#: Unavailable reasons this module gives; the default (DEPENDENCY_UNAVAILABLE) means "cannot reach Weaviate".
UNREACHABLE = "DEPENDENCY_UNAVAILABLE"
PERMISSION_DENIED = "DEPENDENCY_PERMISSION_DENIED"
TIMEOUT = "DEPENDENCY_TIMEOUT"
DEPENDENCY_ERROR = "DEPENDENCY_ERROR"
WRITE_INCOMPLETE = "WRITE_INCOMPLETE"

# Exceptions that mean Weaviate could not be reached (or stopped answering), wherever they sit on the chain.
_UNREACHABLE_TYPES = (
    WeaviateConnectionError,
    WeaviateStartUpError,
    WeaviateClosedClientError,
    WeaviateGRPCUnavailableError,
    WeaviateTimeoutError,
    WeaviateRetryError,  # the client gave up retrying an UNAVAILABLE gRPC call
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
)
_UNREACHABLE_GRPC = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_UNREACHABLE_HTTP = (502, 503, 504)
_DENIED_GRPC = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
_DENIED_HTTP = (401, 403)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen):
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def grpc_status(exc: BaseException) -> grpc.StatusCode | None:
    """The status of the gRPC call behind ``exc``, if a gRPC call failed."""
    for e in _chain(exc):
        if isinstance(e, grpc.aio.AioRpcError):
            return e.code()
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status Weaviate's REST API answered, if ``exc`` reports one."""
    if grpc_status(exc) is not None:
        return None  # UnexpectedStatusCodeError built from a gRPC call holds the gRPC code's number instead
    for e in _chain(exc):
        if isinstance(e, (UnexpectedStatusCodeError, ResponseCannotBeDecodedError)):
            return e.status_code
        if isinstance(e, httpx.HTTPStatusError):
            return e.response.status_code
    return None


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", "") or exc)


def collection_not_found(collection: str | None) -> NotFound:
    return NotFound(
        f"no collection named {collection!r}", reason="COLLECTION_NOT_FOUND", metadata={"collection": collection or ""}
    )


def tenant_not_found(collection: str | None, tenant: str | None) -> NotFound:
    return NotFound(
        f"collection {collection} has no tenant {tenant!r}",
        reason="TENANT_NOT_FOUND",
        metadata={"collection": collection or "", "tenant": tenant or ""},
    )


def not_found_in_message(message: str, collection: str | None, tenant: str | None) -> NotFound | None:
    """NotFound when Weaviate's ``message`` says the collection or the tenant does not exist.

    Text is all there is here: Weaviate's gRPC API answers these with status UNKNOWN and a sentence, and a batch's
    per-object errors are plain strings.
    """
    low = message.lower()
    if "could not find class" in low or "class not found" in low:
        return collection_not_found(collection)
    if "tenant" in low and ("not found" in low or "does not exist" in low):
        return tenant_not_found(collection, tenant)
    return None


def is_unreachable(error: LoragError | None) -> bool:
    """True when ``error`` (from :func:`map_error`) says Weaviate could not be reached."""
    return isinstance(error, Unavailable) and error.reason == UNREACHABLE


def map_error(exc: BaseException, what: str, collection: str | None, tenant: str | None) -> LoragError | None:
    """``exc`` in lorag's terms (anything Weaviate-shaped is at worst UNAVAILABLE), or None when it is not Weaviate's:
    a bug in lorag, which the caller re-raises so the interceptor answers INTERNAL with the trace id."""
    if isinstance(exc, LoragError):
        return exc
    message = _message(exc)
    code = grpc_status(exc)
    status = http_status(exc)
    if status == 404 and collection:
        return collection_not_found(collection)
    if isinstance(exc, (InsufficientPermissionsError, AuthenticationFailedError)) or (
        code in _DENIED_GRPC or status in _DENIED_HTTP
    ):
        return Unavailable(
            f"Weaviate refused to {what}: the indexer's credentials lack permission ({message})",
            reason=PERMISSION_DENIED,
            metadata=DEPENDENCY,
        )
    chain = _chain(exc)
    if (
        code in _UNREACHABLE_GRPC
        or status in _UNREACHABLE_HTTP
        or any(isinstance(e, _UNREACHABLE_TYPES) for e in chain)
    ):
        return Unavailable(f"cannot reach Weaviate to {what}: {message}", metadata=DEPENDENCY)
    missing = not_found_in_message(message, collection, tenant)
    if missing is not None:
        return missing
    # Weaviate's REST API answers a name already taken with 422 and a sentence; only the sentence says so.
    if isinstance(exc, ObjectAlreadyExistsError) or (status is not None and "already exists" in message.lower()):
        return AlreadyExists(f"cannot {what}: {message}", reason="ALREADY_EXISTS", metadata=DEPENDENCY)
    if code is not None or isinstance(exc, (WeaviateBaseError, httpx.HTTPError)):
        log.error("weaviate error", what=what, error=message, type=type(exc).__name__, grpc_status=str(code or ""))
        return Unavailable(f"Weaviate failed to {what}: {message}", reason=DEPENDENCY_ERROR, metadata=DEPENDENCY)
    return None


__all__ = [
    "DEPENDENCY",
    "DEPENDENCY_ERROR",
    "PERMISSION_DENIED",
    "TIMEOUT",
    "UNREACHABLE",
    "WRITE_INCOMPLETE",
    "collection_not_found",
    "grpc_status",
    "http_status",
    "is_unreachable",
    "map_error",
    "not_found_in_message",
    "tenant_not_found",
]
