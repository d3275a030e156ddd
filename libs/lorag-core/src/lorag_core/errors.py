"""lorag's error model: one exception type per gRPC code a caller can act on.

Handlers and backends raise these; the error interceptor (``lorag_core.interceptors``) is the only place that turns
them into a ``google.rpc.Status`` carrying ``ErrorInfo`` (reason, domain ``lorag.dev``) and, for invalid input,
``BadRequest`` field violations. Anything else that escapes a handler is a bug in lorag and becomes INTERNAL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

ERROR_DOMAIN = "lorag.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request: ``field`` is a path such as ``texts[3]``; ``description`` says why."""

    field: str
    description: str


@dataclass
class LoragError(Exception):
    """Base of every error lorag reports to a caller on purpose.

    ``reason`` is a stable UPPER_SNAKE identifier clients can switch on (AIP-193); ``metadata`` adds
    machine-readable context (limits, names) to the ErrorInfo detail. ``dependency`` is set on errors a client
    raises for a failed call: the lorag service that was called (it is not sent on the wire).
    """

    message: str
    reason: str = "UNKNOWN"
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    dependency: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def to_status(self) -> status_pb2.Status:
        """The rich status this error is sent as (``grpc_status.rpc_status.to_status`` turns it into trailers)."""
        details: list[any_pb2.Any] = []
        info = any_pb2.Any()
        info.Pack(
            error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata={k: str(v) for k, v in self.metadata.items()}
            )
        )
        details.append(info)
        if self.violations:
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in self.violations
                    ]
                )
            )
            details.append(bad)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)


@dataclass
class InvalidArgument(LoragError):
    """The request itself is wrong; list what is wrong in ``violations``."""

    reason: str = "INVALID_ARGUMENT"
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT

    @classmethod
    def of(
        cls, field_path: str, description: str, reason: str = "INVALID_ARGUMENT", **metadata: str
    ) -> InvalidArgument:
        """Shorthand for the common one-field case."""
        return cls(
            message=f"{field_path}: {description}",
            reason=reason,
            metadata=metadata,
            violations=[FieldViolation(field_path, description)],
        )


@dataclass
class NotFound(LoragError):
    """A named resource (collection, tenant, adapter, job, dataset) does not exist."""

    reason: str = "NOT_FOUND"
    code: grpc.StatusCode = grpc.StatusCode.NOT_FOUND


@dataclass
class AlreadyExists(LoragError):
    """A resource the caller asked to create exists already."""

    reason: str = "ALREADY_EXISTS"
    code: grpc.StatusCode = grpc.StatusCode.ALREADY_EXISTS


@dataclass
class FailedPrecondition(LoragError):
    """The request is well formed but the system is not in a state to run it (e.g. cancel a finished job)."""

    reason: str = "FAILED_PRECONDITION"
    code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class OutOfRange(LoragError):
    """A position past the end of what exists (e.g. a watch resumed after a job's last event)."""

    reason: str = "OUT_OF_RANGE"
    code: grpc.StatusCode = grpc.StatusCode.OUT_OF_RANGE


@dataclass
class Unauthenticated(LoragError):
    """The call carries no credential, or one that is not valid."""

    reason: str = "UNAUTHENTICATED"
    code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED


@dataclass
class PermissionDenied(LoragError):
    """The caller is known but may not do this (its role, or the tenant or object it names)."""

    reason: str = "PERMISSION_DENIED"
    code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED


@dataclass
class ResourceExhausted(LoragError):
    """The service is at capacity (queue full, too many adapters); the caller may retry with backoff."""

    reason: str = "OVERLOADED"
    code: grpc.StatusCode = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass
class Unavailable(LoragError):
    """A dependency (Weaviate, TEI, a downstream service) cannot be reached; retrying later may succeed."""

    reason: str = "DEPENDENCY_UNAVAILABLE"
    code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE


@dataclass
class DeadlineExceeded(LoragError):
    """The caller's deadline passed before the work finished."""

    reason: str = "DEADLINE_EXCEEDED"
    code: grpc.StatusCode = grpc.StatusCode.DEADLINE_EXCEEDED


__all__ = [
    "ERROR_DOMAIN",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "LoragError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
]
