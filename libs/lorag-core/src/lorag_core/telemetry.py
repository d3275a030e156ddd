"""One call sets up a service's telemetry: traces, metrics and JSON logs that carry the trace ids.

Traces go to an OTLP endpoint when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is
set, so Jaeger or a collector receives every hop. Metrics are exported for Prometheus scraping on the service's
metrics port. Logs are structlog JSON on stdout, one object a line, with ``trace_id``/``span_id`` of the current
span so a log line can be found from a trace and back.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_state: dict[str, object] = {}

_CHATTY_LIBRARIES = ("httpx", "httpx2", "httpcore", "urllib3", "weaviate", "filelock", "sentence_transformers")


@dataclass(frozen=True)
class Telemetry:
    """Handles a service keeps to record its own spans and metrics."""

    tracer: trace.Tracer
    meter: metrics.Meter


def _add_trace_ids(_logger: object, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: stamp the current span's ids (W3C hex form, as Jaeger shows them)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = format(ctx.trace_id, "032x")
        event["span_id"] = format(ctx.span_id, "016x")
    return event


def configure_logging(service_name: str, level: str = "INFO") -> None:
    """structlog JSON on stdout for lorag's loggers and for the libraries' stdlib logging alike."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(),  # sys.stdout as it is when a line is written
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service_name)
    handler = _StdoutHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in _CHATTY_LIBRARIES:  # one line per HTTP request drowns the service's own lines
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic in typeshed only
    """Writes to whatever ``sys.stdout`` is at the time, so a replaced stdout (tests, daemons) is honoured."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _otlp_configured() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_telemetry(
    service_name: str,
    *,
    log_level: str = "INFO",
    metrics_port: int | None = None,
    span_processors: tuple[SpanProcessor, ...] = (),
) -> Telemetry:
    """Install tracer and meter providers (once per process) and JSON logging; return this service's handles.

    A process hosting several services (tests) shares one provider pair: OpenTelemetry's globals can be set once.
    """
    configure_logging(service_name, log_level)
    if "tracer_provider" not in _state and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true":
        resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME", f"lorag-{service_name}")})
        tracer_provider = TracerProvider(resource=resource)
        if _otlp_configured():
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(tracer_provider)
        readers = []
        if metrics_port is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import start_http_server

            start_http_server(metrics_port, addr=os.environ.get("LORAG_METRICS_HOST", "127.0.0.1"))
            readers.append(PrometheusMetricReader())
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
        _state["tracer_provider"] = tracer_provider
    provider = trace.get_tracer_provider()
    for processor in span_processors:
        provider.add_span_processor(processor)  # type: ignore[attr-defined]  # the SDK provider set up above
    return Telemetry(tracer=trace.get_tracer(f"lorag.{service_name}"), meter=metrics.get_meter(f"lorag.{service_name}"))


def shutdown_telemetry() -> None:
    """Flush spans still buffered (called on graceful shutdown so the last requests' spans are not lost)."""
    provider = _state.get("tracer_provider")
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis=5000)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; lines carry the service name and the current trace ids."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
