"""Server interceptors every lorag service runs, in this order (outermost first):

1. OpenTelemetry (from opentelemetry-instrumentation-grpc): one server span per call, parented on the caller's.
2. :class:`ObservabilityInterceptor`: an access log line and RED metrics (rate, errors by code, duration).
3. :class:`DeadlineInterceptor`: remembers the caller's deadline so downstream calls never wait past it.
4. :class:`ErrorInterceptor`: the one place exceptions become ``google.rpc.Status`` (see ``lorag_core.errors``).

Health and reflection calls bypass all but OpenTelemetry's filter: probes are not traffic.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_status import rpc_status
from opentelemetry import metrics, trace

from lorag_core.errors import DeadlineExceeded, InvalidArgument, LoragError
from lorag_core.telemetry import get_logger

log = get_logger("lorag.rpc")

_INFRA_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

# The absolute (monotonic) deadline of the call being served, if its caller set one.
current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("lorag_deadline", default=None)
# Whether the code running serves a call (inside a service) rather than being a plain client (an app, the CLI).
serving_call: contextvars.ContextVar[bool] = contextvars.ContextVar("lorag_serving_call", default=False)

Behavior = Callable[..., Any]

# grpc-stubs makes these generic for type checkers only; at run time they take no parameters.
if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    MethodHandler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    MethodHandler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.aio.ServerInterceptor

#: What a server interceptor calls to reach the next one (or the handler).
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]]


def is_infrastructure(method: str) -> bool:
    """Health checks and reflection: served, but not logged, measured or error-mapped as user traffic."""
    return method.startswith(_INFRA_PREFIXES)


def wrap_handler(
    handler: MethodHandler,
    unary: Callable[[Behavior], Behavior],
    streaming: Callable[[Behavior], Behavior],
    request_deserializer: Callable[[Callable[[bytes], Any]], Callable[[bytes], Any]] | None = None,
) -> MethodHandler:
    """Rebuild ``handler`` with its behaviour wrapped: ``unary`` for single responses, ``streaming`` for streams.
    An unknown method has no handler (``None``): it is passed on for gRPC to answer UNIMPLEMENTED."""
    if handler is None:
        return handler
    behavior: Behavior | None
    factory: Callable[..., MethodHandler]
    if handler.request_streaming and handler.response_streaming:
        behavior, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behavior, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behavior, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behavior, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    deserializer = handler.request_deserializer
    if request_deserializer is not None and deserializer is not None:
        deserializer = request_deserializer(deserializer)
    if behavior is None:  # a handler always defines the behaviour its two flags name
        return handler
    wrapped = streaming(behavior) if handler.response_streaming else unary(behavior)
    return factory(wrapped, request_deserializer=deserializer, response_serializer=handler.response_serializer)


async def _responses(behavior: Behavior, request: Any, context: Context) -> AsyncIterator[Any]:
    """Iterate a response-streaming behaviour, whether it is an async generator or a coroutine using write()."""
    result = behavior(request, context)
    if inspect.isasyncgen(result):
        async for response in result:
            yield response
    else:
        await result


# --- errors ---------------------------------------------------------------------------------------------------


class _Undecodable:
    """Stands in for a request whose bytes did not parse, so the handler wrapper can answer INVALID_ARGUMENT.

    gRPC itself would answer a deserializer failure with INTERNAL, which blames lorag for the caller's bytes
    (for example a string field holding invalid UTF-8).
    """

    def __init__(self, error: Exception) -> None:
        self.error = error

    def to_error(self) -> InvalidArgument:
        detail = str(self.error) or type(self.error).__name__
        return InvalidArgument.of(
            "request",
            f"the request message could not be decoded (invalid UTF-8 in a string field?): {detail}",
            reason="UNDECODABLE_REQUEST",
        )


def _lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            return _Undecodable(exc)

    return deserialize


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.to_error()
        yield request


def _check_request(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise request.to_error()
    if hasattr(request, "__aiter__"):
        return _checked_stream(request)
    return request


async def _abort(context: Context, exc: Exception) -> None:
    if isinstance(exc, LoragError):
        error = exc
    else:
        span = trace.get_current_span().get_span_context()
        trace_id = format(span.trace_id, "032x") if span.is_valid else "none"
        log.exception("unhandled error", error=repr(exc))
        error = LoragError(
            message=f"internal error in lorag (trace {trace_id}); see the service log",
            reason="INTERNAL",
            code=grpc.StatusCode.INTERNAL,
        )
    status = rpc_status.to_status(error.to_status())
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)


class ErrorInterceptor(_ServerInterceptor):
    """Turn every exception leaving a handler into a rich ``google.rpc.Status`` (the one exception → code table)."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        if is_infrastructure(handler_call_details.method):
            return handler

        def unary(behavior: Behavior) -> Behavior:
            async def call(request: Any, context: Context) -> Any:
                try:
                    return await behavior(_check_request(request), context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    await _abort(context, exc)

            return call

        def streaming(behavior: Behavior) -> Behavior:
            async def call(request: Any, context: Context) -> AsyncIterator[Any]:
                try:
                    async for response in _responses(behavior, _check_request(request), context):
                        yield response
                except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
                    raise
                except Exception as exc:
                    await _abort(context, exc)

            return call

        return wrap_handler(handler, unary, streaming, request_deserializer=_lenient)


# --- deadlines --------------------------------------------------------------------------------------------------


class DeadlineInterceptor(_ServerInterceptor):
    """Record the caller's deadline in a context variable for :func:`remaining_time` and the client interceptor."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        if is_infrastructure(handler_call_details.method):
            return handler

        def bind(context: Context) -> None:
            remaining = context.time_remaining()
            current_deadline.set(time.monotonic() + remaining if remaining is not None else None)
            serving_call.set(True)

        def unary(behavior: Behavior) -> Behavior:
            async def call(request: Any, context: Context) -> Any:
                bind(context)
                return await behavior(request, context)

            return call

        def streaming(behavior: Behavior) -> Behavior:
            async def call(request: Any, context: Context) -> AsyncIterator[Any]:
                bind(context)
                async for response in _responses(behavior, request, context):
                    yield response

            return call

        return wrap_handler(handler, unary, streaming)


def remaining_time() -> float | None:
    """Seconds left before the current call's deadline, or None when the caller set none."""
    deadline = current_deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def propagated_timeout(timeout: float | None) -> float | None:
    """The timeout for a downstream call: the smaller of its own and what is left of the caller's deadline.

    Raises DeadlineExceeded when the caller's deadline has already passed, so no downstream work starts.
    """
    remaining = remaining_time()
    if remaining is None:
        return timeout
    if remaining <= 0:
        raise DeadlineExceeded("the caller's deadline passed before the downstream call started")
    return remaining if timeout is None else min(timeout, remaining)


# --- access log and RED metrics --------------------------------------------------------------------------------


class ObservabilityInterceptor(_ServerInterceptor):
    """One JSON access-log line and RED metrics per call: count and duration by method and status code."""

    def __init__(self, service: str, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("lorag.rpc")
        self._service = service
        self._requests = meter.create_counter(
            "lorag.rpc.server.requests", unit="{request}", description="Calls served, by method and status code."
        )
        self._duration = meter.create_histogram(
            "lorag.rpc.server.duration", unit="s", description="Time to serve a call, by method and status code."
        )
        self._in_flight = meter.create_up_down_counter(
            "lorag.rpc.server.active_requests", unit="{request}", description="Calls being served now."
        )

    def _record(self, method: str, started: float, code: grpc.StatusCode, context: Context) -> None:
        elapsed = time.perf_counter() - started
        attributes = {"rpc.service": self._service, "rpc.method": method, "rpc.grpc.status_code": code.name}
        self._requests.add(1, attributes)
        self._duration.record(elapsed, attributes)
        fields = {"method": method, "code": code.name, "duration_ms": round(elapsed * 1000, 3), "peer": context.peer()}
        if code == grpc.StatusCode.OK:
            log.info("rpc", **fields)
        else:
            log.warning("rpc", details=context.details() if hasattr(context, "details") else None, **fields)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> MethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if is_infrastructure(method):
            return handler
        active = {"rpc.service": self._service, "rpc.method": method}

        def outcome(context: Context, exc: BaseException | None) -> grpc.StatusCode:
            if isinstance(exc, asyncio.CancelledError):
                return grpc.StatusCode.CANCELLED
            code = context.code()
            if isinstance(code, grpc.StatusCode):
                return code
            if isinstance(code, int):  # grpc.aio reports the numeric code set by abort()
                return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
            return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN

        def unary(behavior: Behavior) -> Behavior:
            async def call(request: Any, context: Context) -> Any:
                started, error = time.perf_counter(), None
                self._in_flight.add(1, active)
                try:
                    return await behavior(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._in_flight.add(-1, active)
                    self._record(method, started, outcome(context, error), context)

            return call

        def streaming(behavior: Behavior) -> Behavior:
            async def call(request: Any, context: Context) -> AsyncIterator[Any]:
                started, error = time.perf_counter(), None
                self._in_flight.add(1, active)
                try:
                    async for response in _responses(behavior, request, context):
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._in_flight.add(-1, active)
                    self._record(method, started, outcome(context, error), context)

            return call

        return wrap_handler(handler, unary, streaming)
