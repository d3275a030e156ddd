"""The indexer's one connection to Weaviate: the client, a monitor that watches Weaviate, and bounded calls.

weaviate-client retries gRPC calls that fail with UNAVAILABLE for up to a minute, and its REST calls fail at once.
Neither is what a caller of the indexer wants, so the connection watches Weaviate itself: a monitor task probes
``/v1/.well-known/ready`` and gRPC health every ``health_interval_seconds`` (at once after a call saw a connection
error). While Weaviate is down every call answers ``Unavailable`` immediately, calls in flight when the outage is
noticed are cancelled with ``Unavailable``, and the availability callback reports NOT_SERVING; when the probes
succeed again the connection reconnects (a fresh client when the old one never connected) and reports SERVING.
Every call is also bounded by the query/write timeout and the caller's deadline, whichever is sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import httpx
import weaviate
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from weaviate.classes.init import AdditionalConfig, Auth, GrpcConfig, Timeout
from weaviate.client import WeaviateAsyncClient

from lorag_core.errors import DeadlineExceeded, NotFound, Unavailable
from lorag_core.interceptors import remaining_time
from lorag_core.telemetry import get_logger
from lorag_indexer.backends.weaviate import errors
from lorag_indexer.config import IndexerSettings

log = get_logger(__name__)

T = TypeVar("T")

# Short reconnect backoff: after an outage the channel reconnects within about a second (gRPC's default backoff
# grows to two minutes, which would keep the indexer failing long after Weaviate is back).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30_000),
]

# Probe outcomes.
_UP, _REFUSED, _UNSURE = "up", "refused", "unsure"

# Nanoseconds the current RPC has spent waiting on Weaviate (summed over its calls; backoff sleeps excluded).
_weaviate_ns: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("lorag_weaviate_ns", default=None)


@contextlib.contextmanager
def weaviate_clock() -> Iterator[list[int]]:
    """Sum, into the yielded one-item list, the nanoseconds the calls inside the block spend waiting on Weaviate."""
    total = [0]
    token = _weaviate_ns.set(total)
    try:
        yield total
    finally:
        _weaviate_ns.reset(token)


def create_client(settings: IndexerSettings) -> WeaviateAsyncClient:
    """A Weaviate client for ``settings``, not yet connected; it skips its own start-up checks (the probes are)."""
    s = settings
    return weaviate.use_async_with_custom(
        http_host=s.weaviate_host,
        http_port=s.weaviate_http_port,
        http_secure=s.weaviate_secure,
        grpc_host=s.weaviate_grpc_hostname,
        grpc_port=s.weaviate_grpc_port,
        grpc_secure=s.weaviate_secure,
        auth_credentials=Auth.api_key(s.weaviate_api_key.get_secret_value()) if s.weaviate_api_key else None,
        additional_config=AdditionalConfig(
            timeout=Timeout(
                query=s.query_timeout_seconds, insert=s.write_timeout_seconds, init=s.probe_timeout_seconds
            ),
            grpc_config=GrpcConfig(channel_options=CHANNEL_OPTIONS),
        ),
        skip_init_checks=True,
    )


class WeaviateConnection:
    """The client, its monitor and :meth:`call`; create, ``await start()``, call, ``await close()``."""

    def __init__(
        self,
        settings: IndexerSettings,
        *,
        tracer: trace.Tracer,
        on_availability: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.tracer = tracer
        self.on_availability = on_availability
        #: Told the name of a collection a call found missing (the schema cache forgets it).
        self.on_collection_missing: Callable[[str], None] | None = None
        self._client: WeaviateAsyncClient | None = None
        self._up = False
        self._ever_up = asyncio.Event()
        self._wake = asyncio.Event()
        self._monitor_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self._outage_cancelled: set[asyncio.Future[Any]] = set()
        self._unsure_probes = 0
        self._last_problem = "not connected yet"
        self._http: httpx.AsyncClient | None = None
        self._probe_channel: grpc.aio.Channel | None = None
        self._closed = False

    @property
    def up(self) -> bool:
        """True while Weaviate answers the probes."""
        return self._up

    @property
    def available(self) -> bool:
        """True while Weaviate answers the probes and a client is connected."""
        return self._up and self._client is not None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self, wait: bool = True) -> None:
        """Start watching Weaviate; with ``wait``, return once it is reachable (``connect_timeout_seconds``, 0 = ever).

        Raises ``Unavailable`` when ``wait`` and Weaviate stays unreachable past the connect timeout.
        """
        if self._monitor_task is None:
            s = self.settings
            headers = {}
            if s.weaviate_api_key is not None:
                headers["authorization"] = f"Bearer {s.weaviate_api_key.get_secret_value()}"
            self._http = httpx.AsyncClient(timeout=s.probe_timeout_seconds, headers=headers)
            if s.weaviate_secure:
                self._probe_channel = grpc.aio.secure_channel(
                    s.weaviate_grpc_address, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS
                )
            else:
                self._probe_channel = grpc.aio.insecure_channel(s.weaviate_grpc_address, options=CHANNEL_OPTIONS)
            self._monitor_task = asyncio.create_task(self._monitor(), name="lorag-indexer-weaviate-monitor")
        if wait:
            await self._wait_until_up()

    async def _wait_until_up(self) -> None:
        timeout = self.settings.connect_timeout_seconds or None
        waiter = asyncio.ensure_future(self._ever_up.wait())
        started = time.monotonic()
        try:
            while not waiter.done():
                slice_s = 10.0 if timeout is None else max(min(10.0, timeout - (time.monotonic() - started)), 0.0)
                await asyncio.wait({waiter}, timeout=slice_s)
                elapsed = time.monotonic() - started
                if waiter.done():
                    break
                if timeout is not None and elapsed >= timeout:
                    raise Unavailable(
                        f"Weaviate at {self.settings.weaviate_http_url} did not become reachable within "
                        f"{timeout:g} s: {self._last_problem}",
                        metadata=errors.DEPENDENCY,
                    )
                log.warning(
                    "waiting for weaviate",
                    url=self.settings.weaviate_http_url,
                    grpc=self.settings.weaviate_grpc_address,
                    waited_s=round(elapsed),
                    problem=self._last_problem,
                )
        finally:
            waiter.cancel()

    async def close(self) -> None:
        """Stop the monitor, fail calls in flight and close every connection; idempotent."""
        self._closed = True
        self._up = False
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
        for task in list(self._inflight):
            task.cancel()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        if self._http is not None:
            await self._http.aclose()
        if self._probe_channel is not None:
            await self._probe_channel.close(None)

    # -- watching Weaviate -----------------------------------------------------------------------------------------

    async def _monitor(self) -> None:
        s = self.settings
        while not self._closed:
            self._wake.clear()  # a call that sees a connection error during this probe asks for another at once
            try:
                outcome = await self._probe()
                if outcome == _UP and self._client is None:
                    outcome = await self._connect()
                if outcome == _UNSURE:
                    self._unsure_probes += 1
                    # A slow probe alone may be load, not an outage: two in a row mark Weaviate down.
                    up = self._up and self._unsure_probes < 2
                else:
                    self._unsure_probes = 0
                    up = outcome == _UP
                await self._set_up(up)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the monitor must outlive any surprise
                log.exception("weaviate monitor error", error=repr(exc))
            interval = s.health_interval_seconds if self._up else min(s.health_interval_seconds, 0.5)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    async def _probe(self) -> str:
        """REST readiness and gRPC health of Weaviate: _UP, _REFUSED (surely down) or _UNSURE (slow or odd)."""
        assert self._http is not None and self._probe_channel is not None
        s = self.settings
        try:
            response = await self._http.get(s.weaviate_http_url + "/v1/.well-known/ready")
            if response.status_code != 200:
                self._last_problem = f"readiness probe answered HTTP {response.status_code}"
                return _REFUSED
        except httpx.TimeoutException:
            self._last_problem = f"readiness probe timed out after {s.probe_timeout_seconds:g} s"
            return _UNSURE
        except httpx.HTTPError as exc:
            self._last_problem = f"cannot reach {s.weaviate_http_url}: {exc!r}"
            return _REFUSED
        try:
            reply = await health_pb2_grpc.HealthStub(self._probe_channel).Check(
                health_pb2.HealthCheckRequest(), timeout=s.probe_timeout_seconds
            )
        except grpc.aio.AioRpcError as exc:
            self._last_problem = f"gRPC health at {s.weaviate_grpc_address}: {exc.code().name} {exc.details()}"
            return _UNSURE if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else _REFUSED
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            self._last_problem = f"gRPC health at {s.weaviate_grpc_address} is {reply.status}"
            return _REFUSED
        return _UP

    async def _connect(self) -> str:
        client = create_client(self.settings)
        try:
            await client.connect()
        except Exception as exc:  # any failure means "not yet"; the next probe tries again
            self._last_problem = f"connect failed: {exc!r}"
            with contextlib.suppress(Exception):
                await client.close()
            return _REFUSED
        self._client = client
        log.info("connected to weaviate", url=self.settings.weaviate_http_url, grpc=self.settings.weaviate_grpc_address)
        return _UP

    async def _set_up(self, up: bool) -> None:
        was = self._up
        self._up = up
        if up and not was:
            self._ever_up.set()
            log.info("weaviate is reachable", url=self.settings.weaviate_http_url)
        elif was and not up:
            log.warning("weaviate is unreachable", url=self.settings.weaviate_http_url, problem=self._last_problem)
            for task in list(self._inflight):
                self._outage_cancelled.add(task)
                task.cancel()
        if self.on_availability is not None and (up != was or not up):
            # While down, NOT_SERVING is re-asserted on every probe (a start-up SERVING may have raced it).
            try:
                await self.on_availability(up)
            except Exception as exc:  # a health hook must never stop the monitor
                log.warning("availability hook failed", error=repr(exc))

    # -- calling Weaviate ------------------------------------------------------------------------------------------

    def outage(self, what: str) -> Unavailable:
        """The error every call answers while Weaviate is unreachable."""
        return Unavailable(
            f"Weaviate is unreachable ({self._last_problem}); cannot {what}. Retry later.",
            metadata={**errors.DEPENDENCY, "url": self.settings.weaviate_http_url},
        )

    def _budget(self, write: bool) -> tuple[float, bool]:
        """Seconds this call may wait for Weaviate, and whether the caller's deadline (not ours) sets it."""
        own = self.settings.write_timeout_seconds if write else self.settings.query_timeout_seconds
        left = remaining_time()
        if left is None or left >= own:
            return own, False
        if left <= 0:
            raise DeadlineExceeded("the caller's deadline passed before Weaviate was asked")
        return left, True

    async def call(
        self,
        what: str,
        fn: Callable[[WeaviateAsyncClient], Awaitable[T]],
        *,
        write: bool = False,
        collection: str | None = None,
        tenant: str | None = None,
        operation: str | None = None,
        rest: bool = False,
    ) -> T:
        """Run one Weaviate operation, bounded in time, cut short by an outage, its errors mapped to lorag's.

        Each call is a CLIENT span (``weaviate <operation>``, ``peer.service=weaviate``): Weaviate sends no spans of
        its own, so this span is the indexer → Weaviate edge of a trace and shows the time spent in Weaviate.
        ``rest`` marks calls the client makes over Weaviate's REST API (schema), the rest go over its gRPC API.
        """
        if self._client is None or not self._up or self._closed:
            raise self.outage(what)
        with self._client_span(operation or what, collection, tenant, rest):
            try:
                return await self._timed_call(what, fn, write, collection, tenant)
            except NotFound as exc:
                if exc.reason == "COLLECTION_NOT_FOUND" and collection and self.on_collection_missing is not None:
                    self.on_collection_missing(collection)
                raise

    def _client_span(
        self, operation: str, collection: str | None, tenant: str | None, rest: bool
    ) -> contextlib.AbstractContextManager[trace.Span]:
        s = self.settings
        attributes: dict[str, Any] = {
            "peer.service": "weaviate",
            "db.system.name": "weaviate",
            "db.system": "weaviate",
            "db.operation.name": operation,
            "server.address": s.weaviate_host if rest else s.weaviate_grpc_hostname,
            "server.port": s.weaviate_http_port if rest else s.weaviate_grpc_port,
            "network.protocol.name": "http" if rest else "grpc",
        }
        if collection:
            attributes["db.collection.name"] = collection
        if tenant:
            attributes["lorag.tenant"] = tenant
        return self.tracer.start_as_current_span(
            f"weaviate {operation}", kind=trace.SpanKind.CLIENT, attributes=attributes
        )

    async def _timed_call(
        self,
        what: str,
        fn: Callable[[WeaviateAsyncClient], Awaitable[T]],
        write: bool,
        collection: str | None,
        tenant: str | None,
    ) -> T:
        client = self._client
        if client is None:
            raise self.outage(what)
        budget, by_deadline = self._budget(write)
        task = asyncio.ensure_future(fn(client))
        self._inflight.add(task)
        started = time.perf_counter_ns()
        try:
            done, _ = await asyncio.wait({task}, timeout=budget)
        finally:
            self._inflight.discard(task)
            if not task.done():
                task.cancel()
            clock = _weaviate_ns.get()
            if clock is not None:
                clock[0] += time.perf_counter_ns() - started
        outage = task in self._outage_cancelled
        self._outage_cancelled.discard(task)
        if not done:
            if by_deadline:
                raise DeadlineExceeded(f"the caller's deadline passed while Weaviate was asked to {what}")
            self._wake.set()
            raise Unavailable(
                f"Weaviate did not {what} within {budget:g} s",
                reason=errors.TIMEOUT,
                metadata={**errors.DEPENDENCY, "timeout_s": f"{budget:g}"},
            )
        if task.cancelled():
            if outage or self._closed:
                raise self.outage(what)
            raise asyncio.CancelledError()
        exc = task.exception()
        if exc is None:
            return task.result()
        mapped = errors.map_error(exc, what, collection, tenant)
        if mapped is None or mapped is exc:
            raise exc  # already lorag's, or a bug in lorag (the interceptor answers INTERNAL with the trace id)
        if errors.is_unreachable(mapped):
            self._wake.set()
        raise mapped from exc

    # -- tracing ---------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, name: str, **attributes: Any) -> Iterator[trace.Span]:
        """A child span for one domain step; attributes are ids and sizes, never document text."""
        with self.tracer.start_as_current_span(
            name, attributes={f"lorag.indexer.{k}": v for k, v in attributes.items()}
        ) as span:
            span.set_attribute("db.system", "weaviate")
            yield span


__all__ = ["CHANNEL_OPTIONS", "WeaviateConnection", "create_client", "weaviate_clock"]
