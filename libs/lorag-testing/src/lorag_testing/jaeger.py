"""A real Jaeger (v2, all-in-one, in-memory) as a local process, and a small client for its query API.

The binary is built once by `make setup` into the lorag cache. Started without arguments it listens on fixed ports
(OTLP 4317/4318, query 16686, and more), so this launcher writes its own configuration — the all-in-one pipeline
with only the OTLP receiver, in-memory storage and the query extension, its own metrics switched off — on ports it
picks free. The root conftest's `process_stack` starts one per session. It reuses the CLI's launcher base
(`lorag_cli.stack.processes`) but lives here, in the test-support package, because only tests start it.

    with JaegerServer(tmp / "jaeger") as jaeger:
        env = jaeger.otel_env()               # OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<otlp grpc>, ...
        ...                                   # run services with env
        (trace,) = jaeger.query.get_traces("lorag-gateway", operation="/lorag.gateway.v1.GatewayService/Retrieve")
        trace.edges()                         # {("lorag-gateway", "lorag-retrieval"), ...}
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lorag_cli.stack import processes
from lorag_cli.stack.errors import StackError, StartupError
from lorag_cli.stack.ports import PortPicker, check_ports_free
from lorag_cli.stack.weaviate import cache_dir

BINARY_NAME = "jaeger"
DEFAULT_HOST = "127.0.0.1"


class JaegerNotInstalledError(StackError):
    """The Jaeger binary is missing: it is built once by `make setup`, never at run time."""


def find_jaeger_binary(env: Mapping[str, str] | None = None) -> Path:
    """The Jaeger v2 binary: $LORAG_JAEGER_BIN, else $LORAG_CACHE/bin/jaeger."""
    env = os.environ if env is None else env
    explicit = env.get("LORAG_JAEGER_BIN")
    path = Path(explicit).expanduser() if explicit else cache_dir(env) / "bin" / BINARY_NAME
    if not (path.is_file() and os.access(path, os.X_OK)):
        source = f"LORAG_JAEGER_BIN={explicit}" if explicit else str(path)
        raise JaegerNotInstalledError(
            f"Jaeger binary not found at {source}; run `make setup` to build it (once, about 5 minutes), "
            "or point LORAG_JAEGER_BIN at a jaeger v2 binary"
        )
    return path


@dataclass(frozen=True)
class JaegerPorts:
    """Every port the all-in-one configuration below binds."""

    otlp_grpc: int
    otlp_http: int
    query_http: int
    query_grpc: int

    def by_role(self) -> dict[str, int]:
        return {
            "jaeger OTLP gRPC": self.otlp_grpc,
            "jaeger OTLP HTTP": self.otlp_http,
            "jaeger query HTTP": self.query_http,
            "jaeger query gRPC": self.query_grpc,
        }

    @classmethod
    def pick(cls, **given: int | None) -> JaegerPorts:
        """Keep the given ports (by field name), choose free ones for the rest."""
        taken = {p for p in given.values() if p is not None}
        chosen: dict[str, int] = {}
        with PortPicker() as picker:  # holds each pick until all are chosen, so no two collide
            for name in ("otlp_grpc", "otlp_http", "query_http", "query_grpc"):
                wanted = given.get(name)
                if wanted is None:
                    wanted = picker.single()
                    while wanted in taken:
                        wanted = picker.single()
                    taken.add(wanted)
                chosen[name] = wanted
        return cls(**chosen)


def jaeger_config(host: str, ports: JaegerPorts, max_traces: int = 100_000) -> str:
    """The all-in-one pipeline (OTLP in, memory store, query API) on `ports`; no listener on a fixed port."""
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: info

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: {max_traces}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: "{host}:{ports.query_http}"
    grpc:
      endpoint: "{host}:{ports.query_grpc}"

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: "{host}:{ports.otlp_grpc}"
      http:
        endpoint: "{host}:{ports.otlp_http}"

processors:
  batch:
    timeout: 100ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


# -- reading traces -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One span of a Jaeger trace, with its service resolved and its tags as a plain dict."""

    span_id: str
    trace_id: str
    operation: str
    service: str
    parent_id: str | None
    kind: str
    tags: dict[str, Any]
    events: list[dict[str, Any]]
    start_us: int
    duration_us: int


@dataclass(frozen=True)
class Trace:
    """A trace as Jaeger's query API returns it (``GET /api/traces/{id}``), made easy to assert on."""

    trace_id: str
    spans: list[Span]

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Trace:
        processes_ = {pid: p.get("serviceName", "") for pid, p in (data.get("processes") or {}).items()}
        spans = []
        for raw in data.get("spans") or []:
            tags = {t["key"]: t.get("value") for t in raw.get("tags") or []}
            parent = next((r["spanID"] for r in raw.get("references") or [] if r.get("refType") == "CHILD_OF"), None)
            spans.append(
                Span(
                    span_id=raw["spanID"],
                    trace_id=raw["traceID"],
                    operation=raw.get("operationName", ""),
                    service=processes_.get(raw.get("processID", ""), ""),
                    parent_id=parent,
                    kind=str(tags.get("span.kind", "")),
                    tags=tags,
                    events=[
                        {f["key"]: f.get("value") for f in log.get("fields") or []} for log in raw.get("logs") or []
                    ],
                    start_us=int(raw.get("startTime", 0)),
                    duration_us=int(raw.get("duration", 0)),
                )
            )
        return cls(trace_id=str(data.get("traceID", "")), spans=spans)

    @property
    def services(self) -> set[str]:
        return {s.service for s in self.spans}

    @property
    def trace_ids(self) -> set[str]:
        """Every trace id its spans carry (one, for a well-propagated request)."""
        return {s.trace_id for s in self.spans}

    def span(self, span_id: str) -> Span | None:
        return next((s for s in self.spans if s.span_id == span_id), None)

    def ancestors(self, span: Span) -> list[Span]:
        """`span`'s parent, its parent's parent, ... as far as the trace holds them."""
        chain = []
        current = self.span(span.parent_id) if span.parent_id else None
        while current is not None and current not in chain:
            chain.append(current)
            current = self.span(current.parent_id) if current.parent_id else None
        return chain

    def named(self, operation: str) -> list[Span]:
        return [s for s in self.spans if s.operation == operation]

    def roots(self) -> list[Span]:
        """Spans whose parent is not in the trace: one, the first caller's, when nothing was lost."""
        ids = {s.span_id for s in self.spans}
        return [s for s in self.spans if s.parent_id is None or s.parent_id not in ids]

    def edges(self) -> set[tuple[str, str]]:
        """(caller service, called service) pairs: a span whose parent belongs to another service, plus each
        client span naming an uninstrumented peer (``peer.service``, for example Weaviate)."""
        found = set()
        for s in self.spans:
            parent = self.span(s.parent_id) if s.parent_id else None
            if parent is not None and parent.service != s.service:
                found.add((parent.service, s.service))
            peer = s.tags.get("peer.service")
            if s.kind == "client" and peer:
                found.add((s.service, str(peer)))
        return found

    def attribute_values(self) -> Iterator[tuple[Span, str, Any]]:
        """Every (span, key, value) of every tag and every span-event field."""
        for s in self.spans:
            for key, value in s.tags.items():
                yield s, key, value
            for event in s.events:
                for key, value in event.items():
                    yield s, key, value


class JaegerQuery:
    """The few calls of Jaeger's HTTP query API (the one its UI uses) that tests and operators need."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=self._timeout)
        response.raise_for_status()
        return response.json()

    def services(self) -> list[str]:
        """Service names Jaeger has spans of (``GET /api/services``)."""
        return sorted(self._get("/api/services").get("data") or [])

    def get_traces(
        self, service: str, *, operation: str | None = None, limit: int = 20, lookback: str = "1h"
    ) -> list[Trace]:
        """Recent traces with a span of `service` (optionally of `operation`), newest first as Jaeger orders them."""
        params: dict[str, Any] = {"service": service, "limit": limit, "lookback": lookback}
        if operation:
            params["operation"] = operation
        return [Trace.from_api(t) for t in self._get("/api/traces", params).get("data") or []]

    def get_trace(self, trace_id: str) -> Trace | None:
        """The whole trace `trace_id` (32 hex digits), or None when Jaeger has no span of it."""
        try:
            data = self._get(f"/api/traces/{trace_id}").get("data") or []
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise
        return Trace.from_api(data[0]) if data else None

    def wait_for_trace(
        self, trace_id: str, *, min_spans: int = 1, services: set[str] | None = None, timeout: float = 20.0
    ) -> Trace:
        """Poll until trace `trace_id` has `min_spans` spans from every one of `services` (spans arrive in batches
        from each process); raise TimeoutError with what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        trace: Trace | None = None
        while True:
            trace = self.get_trace(trace_id)
            if trace is not None and len(trace.spans) >= min_spans and (services or set()) <= trace.services:
                return trace
            if time.monotonic() >= deadline:
                got = sorted(trace.services) if trace else []
                raise TimeoutError(f"trace {trace_id} incomplete after {timeout:.0f} s; services so far: {got}")
            time.sleep(0.25)


# -- the server -----------------------------------------------------------------------------------------------------


class JaegerServer(processes.ManagedServer):
    """One Jaeger all-in-one process with in-memory storage, on free (or given) ports.

    `work_dir` holds its configuration file and, by default, its log. Use as a context manager (start, wait until
    the query API answers, stop on exit) or call start / wait_ready / stop.
    """

    stop_grace = 10.0

    def __init__(
        self,
        work_dir: Path | str,
        *,
        host: str = DEFAULT_HOST,
        otlp_grpc_port: int | None = None,
        otlp_http_port: int | None = None,
        query_port: int | None = None,
        query_grpc_port: int | None = None,
        binary: Path | str | None = None,
        log_path: Path | str | None = None,
        max_traces: int = 100_000,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.host = host
        self.binary = Path(binary) if binary is not None else find_jaeger_binary()
        self.ports = JaegerPorts.pick(
            otlp_grpc=otlp_grpc_port, otlp_http=otlp_http_port, query_http=query_port, query_grpc=query_grpc_port
        )
        self.config_path = self.work_dir / "jaeger.yaml"
        self.log_path = Path(log_path) if log_path is not None else self.work_dir / "jaeger.log"
        self.max_traces = max_traces
        self._proc: subprocess.Popen[bytes] | None = None

    # -- where it listens ------------------------------------------------------------------------------------
    @property
    def otlp_endpoint(self) -> str:
        """The OTLP/gRPC endpoint, in the form OTEL_EXPORTER_OTLP_ENDPOINT takes (http:// means no TLS)."""
        return f"http://{self.host}:{self.ports.otlp_grpc}"

    @property
    def query_url(self) -> str:
        """Base URL of the UI and the query API."""
        return f"http://{self.host}:{self.ports.query_http}"

    @property
    def query(self) -> JaegerQuery:
        return JaegerQuery(self.query_url)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def otel_env(self, schedule_delay_ms: int = 200) -> dict[str, str]:
        """Standard OTEL_* variables that send a lorag service's spans here, flushed every `schedule_delay_ms`."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": str(schedule_delay_ms),
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        }

    # -- process ---------------------------------------------------------------------------------------------
    def argv(self) -> list[str]:
        return [str(self.binary), "--config", str(self.config_path)]

    def start(self, *, detach: bool = False) -> int:
        """Write the configuration and launch Jaeger (not yet ready: call `wait_ready`); returns its pid."""
        if self._proc is not None and self._proc.poll() is None:
            raise StackError(f"jaeger is already running (pid {self._proc.pid})")
        check_ports_free(self.ports.by_role(), hint="choose other ports or stop the process holding it")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(jaeger_config(self.host, self.ports, self.max_traces))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        # Jaeger's query extension traces itself through the OTel SDK, which would export to the fixed default
        # localhost:4317 (perhaps someone else's collector): sample nothing, and point it at our own port anyway.
        env.update({"OTEL_TRACES_SAMPLER": "always_off", "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint})
        with processes.open_log(self.log_path, "jaeger " + " ".join(self.argv())) as log:
            try:
                self._proc = processes.spawn(self.argv(), env=env, log=log, cwd=self.work_dir, detach=detach)
            except OSError as exc:
                raise StackError(f"cannot start jaeger from {self.binary}: {exc}") from exc
        return self._proc.pid

    def is_ready(self) -> bool:
        try:
            return httpx.get(self.query_url + "/api/services", timeout=1.0).is_success
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the query API answers; raise StartupError (with the log tail) otherwise."""
        if self._proc is None:
            raise StackError("jaeger was not started")
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise StartupError("jaeger", f"exited with code {code} while starting", self.log_tail())
            if self.is_ready():
                return
            if time.monotonic() >= deadline:
                raise StartupError(
                    "jaeger", f"query API not ready at {self.query_url} after {timeout:.0f} s", self.log_tail()
                )
            time.sleep(0.2)

    def __repr__(self) -> str:
        return f"JaegerServer(otlp={self.otlp_endpoint}, query={self.query_url})"


__all__ = [
    "JaegerNotInstalledError",
    "JaegerPorts",
    "JaegerQuery",
    "JaegerServer",
    "Span",
    "Trace",
    "find_jaeger_binary",
    "jaeger_config",
]
