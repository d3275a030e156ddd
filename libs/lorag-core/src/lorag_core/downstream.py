"""Errors of downstream calls, carried back to the caller with their meaning intact.

When the gateway's call to the indexer fails with INVALID_ARGUMENT, the gateway's caller must see the same
code, reason and field violations, not a vague INTERNAL. When a dependency is down, the caller sees UNAVAILABLE
naming which one. :func:`downstream_call` does both around any awaited client call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lorag_core.errors import DeadlineExceeded, FieldViolation, LoragError, Unavailable

T = TypeVar("T")

# Codes a caller can act on keep their code; the rest say which dependency failed.
_PASSED_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}


def from_rpc_error(error: grpc.aio.AioRpcError, dependency: str) -> LoragError:
    """The lorag error to raise for a failed call to ``dependency`` (a service name such as ``indexer``)."""
    code = error.code()
    reason, metadata, violations = "", {}, []
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
    message = error.details() or code.name
    if code in _PASSED_THROUGH:
        return LoragError(message=message, reason=reason or code.name, metadata=metadata, violations=violations, code=code)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{dependency} did not answer before the deadline", metadata={"dependency": dependency})
    return Unavailable(
        f"{dependency} is unavailable: {message}",
        reason="DEPENDENCY_UNAVAILABLE" if code == grpc.StatusCode.UNAVAILABLE else "DEPENDENCY_FAILED",
        metadata={"dependency": dependency, "dependency_code": code.name},
    )


@asynccontextmanager
async def downstream_errors(dependency: str) -> AsyncIterator[None]:
    """``async with downstream_errors("indexer"): ...`` re-raises a failed call as the matching lorag error."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error, dependency) from None


async def downstream_call(dependency: str, call: Awaitable[T]) -> T:
    """Await one downstream call, re-raising its failure as the matching lorag error."""
    async with downstream_errors(dependency):
        return await call
