"""Errors of downstream calls, carried back to the caller with their meaning intact.

A downstream call fails with a ``grpc.aio.AioRpcError`` whose trailers carry the callee's ``google.rpc.Status``
(``ErrorInfo`` with reason and metadata, ``BadRequest`` field violations). :func:`error_from_rpc` rebuilds the
matching :class:`lorag_core.errors.LoragError`, so that the error interceptor sends the caller the same code, message,
reason, metadata and violations the callee sent:

* the caller's own mistakes pass through unchanged: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
  FAILED_PRECONDITION, and RESOURCE_EXHAUSTED (back off and retry), with an optional renaming of violation fields
  from the callee's request to the caller's (``filter.field`` → ``options.filter.field``);
* UNAVAILABLE becomes ``Unavailable`` naming the dependency (``metadata["dependency"]``);
* DEADLINE_EXCEEDED is ``DeadlineExceeded`` when the caller's own deadline has passed, and ``Unavailable``
  (reason ``DEPENDENCY_TIMEOUT``) when only the per-call timeout towards the dependency ran out;
* anything else (INTERNAL, UNKNOWN, UNIMPLEMENTED ...) keeps its code, with the dependency named in the message.

"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lorag_core.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LoragError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from lorag_core.interceptors import remaining_time

FieldMap = Callable[[str], str]

_PASS_THROUGH: dict[grpc.StatusCode, type[LoragError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def status_details(error: grpc.RpcError) -> tuple[str | None, dict[str, str], list[FieldViolation]]:
    """The ``ErrorInfo`` reason and metadata and the ``BadRequest`` violations an error's trailers carry."""
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except (ValueError, AttributeError, TypeError):  # trailers that contradict the call's code, or no trailers
        status = None
    if status is None:
        return reason, metadata, violations
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or None
            metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
    return reason, metadata, violations


def error_from_rpc(error: grpc.RpcError, *, dependency: str, field_map: FieldMap | None = None) -> LoragError:
    """The lorag error to raise for a failed call to ``dependency`` (a service name such as ``"indexer"``)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN  # type: ignore[attr-defined]
    message = (error.details() if hasattr(error, "details") else None) or str(code.name if code else "")  # type: ignore[attr-defined]
    reason, metadata, violations = status_details(error)
    if field_map is not None:
        violations = [FieldViolation(field_map(v.field), v.description) for v in violations]
        head, separator, rest = message.partition(": ")
        if separator and head and " " not in head and field_map(head) != head:  # "filter.field: ..." messages
            message = f"{field_map(head)}{separator}{rest}"

    kind = _PASS_THROUGH.get(code)
    if kind is not None:
        if reason:
            return kind(message=message, reason=reason, metadata=metadata, violations=violations)
        return kind(message=message, metadata=metadata, violations=violations)

    named = {**metadata, "dependency": dependency}
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(
            f"the {dependency} service is unavailable: {message}",
            reason=reason or "DEPENDENCY_UNAVAILABLE",
            metadata=named,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        left = remaining_time()
        if left is not None and left <= 0:
            return DeadlineExceeded(
                f"the caller's deadline passed while waiting for the {dependency} service", metadata=named
            )
        return Unavailable(
            f"the {dependency} service did not answer in time: {message}",
            reason="DEPENDENCY_TIMEOUT",
            metadata=named,
        )
    return LoragError(
        message=f"the {dependency} service failed ({code.name if code else 'UNKNOWN'}): {message}",
        reason=reason or "DEPENDENCY_FAILED",
        metadata=named,
        violations=violations,
        code=code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
    )


def prefix_fields(mapping: dict[str, str]) -> FieldMap:
    """A field map renaming a leading path segment: ``{"filter": "options.filter"}`` maps ``filter.field`` to
    ``options.filter.field`` and ``texts[0]`` with ``{"texts[0]": "query"}`` to ``query``; others are unchanged."""

    def rename(field: str) -> str:
        for old, new in mapping.items():
            if field == old or field.startswith((old + ".", old + "[")):
                return new + field[len(old) :]
        return field

    return rename


T = TypeVar("T")


@asynccontextmanager
async def downstream_errors(dependency: str, field_map: FieldMap | None = None) -> AsyncIterator[None]:
    """``async with downstream_errors("indexer"): ...`` re-raises a failed call as the matching lorag error."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        raise error_from_rpc(error, dependency=dependency, field_map=field_map) from None


async def downstream_call(dependency: str, call: Awaitable[T], field_map: FieldMap | None = None) -> T:
    """Await one downstream call, re-raising its failure as the matching lorag error."""
    async with downstream_errors(dependency, field_map):
        return await call


__all__ = ["FieldMap", "downstream_call", "downstream_errors", "error_from_rpc", "prefix_fields", "status_details"]
