"""Errors of calls to lorag services, rebuilt as lorag errors with their meaning intact.

A call fails with a ``grpc.aio.AioRpcError`` whose trailers carry the callee's ``google.rpc.Status``
(``ErrorInfo`` with reason and metadata, ``BadRequest`` field violations). :func:`error_from_rpc` rebuilds the
matching :class:`lorag_core.errors.LoragError`; the SDK (``lorag_client``) raises only these, so a service that
calls another re-raises them and the error interceptor sends its own caller the same code, message, reason,
metadata and violations the callee sent:

* the caller's own mistakes pass through unchanged: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
  FAILED_PRECONDITION, OUT_OF_RANGE, UNAUTHENTICATED, PERMISSION_DENIED, and RESOURCE_EXHAUSTED (back off and
  retry); :func:`renamed_fields` renames violation fields from the callee's request to the caller's
  (``filter.field`` → ``options.filter.field``);
* UNAVAILABLE becomes ``Unavailable`` naming the dependency (``metadata["dependency"]``: the deepest one that
  failed, when the callee named one, else the callee itself);
* DEADLINE_EXCEEDED is ``DeadlineExceeded`` for a plain client (an application, the CLI) and, inside a
  service, when the deadline of the call being served has passed; a service whose per-call timeout towards a
  dependency ran out first reports ``Unavailable`` (reason ``DEPENDENCY_TIMEOUT``) to its own caller;
* anything else (INTERNAL, UNKNOWN, UNIMPLEMENTED ...) keeps its code, with the dependency named in the message.

Every error made here carries ``dependency``: the service that was called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from lorag_core.interceptors import remaining_time, serving_call

FieldMap = Callable[[str], str]

_PASS_THROUGH: dict[grpc.StatusCode, type[LoragError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def status_details(error: grpc.RpcError) -> tuple[str | None, dict[str, str], list[FieldViolation]]:
    """The ``ErrorInfo`` reason and metadata and the ``BadRequest`` violations an error's trailers carry."""
    reason: str | None = None
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]  # an RpcError that is also a grpc.Call
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
    # Any grpc.Call-like error: an aio error, a sync channel's error, or a test's stand-in with code()/details().
    code_of, details_of = getattr(error, "code", None), getattr(error, "details", None)
    code = code_of() if callable(code_of) else None
    code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    message = (details_of() if callable(details_of) else None) or code.name
    reason, metadata, violations = status_details(error)
    rebuilt = _rebuild(code, message, reason, metadata, violations, dependency)
    rebuilt.dependency = dependency
    return rename_fields(rebuilt, field_map) if field_map is not None else rebuilt


def _rebuild(
    code: grpc.StatusCode,
    message: str,
    reason: str | None,
    metadata: dict[str, str],
    violations: list[FieldViolation],
    dependency: str,
) -> LoragError:
    kind = _PASS_THROUGH.get(code)
    if kind is not None:
        if reason:
            return kind(message=message, reason=reason, metadata=metadata, violations=violations)
        return kind(message=message, metadata=metadata, violations=violations)

    # The callee's own word on what failed wins: a gateway reporting "generation" stays "generation" for the SDK.
    named = {"dependency": dependency, **metadata}
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(
            f"the {dependency} service is unavailable: {message}",
            reason=reason or "DEPENDENCY_UNAVAILABLE",
            metadata=named,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        left = remaining_time()
        if not serving_call.get() or (left is not None and left <= 0):  # a plain client's own timeout, or ours
            return DeadlineExceeded(
                f"the caller's deadline passed while waiting for the {dependency} service", metadata=named
            )
        return Unavailable(
            f"the {dependency} service did not answer in time: {message}",
            reason="DEPENDENCY_TIMEOUT",
            metadata=named,
        )
    return LoragError(
        message=f"the {dependency} service failed ({code.name}): {message}",
        reason=reason or "DEPENDENCY_FAILED",
        metadata=named,
        violations=violations,
        code=code,
    )


def rename_fields(error: LoragError, field_map: FieldMap) -> LoragError:
    """``error`` with its violations' fields (and a leading ``field: ...`` in its message) renamed by ``field_map``:
    the callee's request fields become the caller's."""
    error.violations = [FieldViolation(field_map(v.field), v.description) for v in error.violations]
    head, separator, rest = error.message.partition(": ")
    if separator and head and " " not in head and field_map(head) != head:  # "filter.field: ..." messages
        error.message = f"{field_map(head)}{separator}{rest}"
        error.args = (error.message,)
    return error


def prefix_fields(mapping: dict[str, str]) -> FieldMap:
    """A field map renaming a leading path segment: ``{"filter": "options.filter"}`` maps ``filter.field`` to
    ``options.filter.field`` and ``texts[0]`` with ``{"texts[0]": "query"}`` to ``query``; others are unchanged."""

    def rename(field: str) -> str:
        for old, new in mapping.items():
            if field == old or field.startswith((old + ".", old + "[")):
                return new + field[len(old) :]
        return field

    return rename


@contextmanager
def renamed_fields(field_map: FieldMap) -> Iterator[None]:
    """``with renamed_fields(prefix_fields({"query": "question"})): await client.retrieve(...)`` re-raises a lorag
    error with the fields of the request sent renamed to those of the request being served."""
    try:
        yield
    except LoragError as error:
        raise rename_fields(error, field_map) from error.__cause__


__all__ = ["FieldMap", "error_from_rpc", "prefix_fields", "rename_fields", "renamed_fields", "status_details"]
