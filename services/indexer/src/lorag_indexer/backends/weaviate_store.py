"""All of the indexer's Weaviate work: schema, tenants, batched writes with retries, searches, outage handling.

**Client.** One ``WeaviateAsyncClient`` (weaviate-client v4) per process. Searches, batch writes, deletes, tenant
and aggregate calls go over Weaviate's gRPC API; schema calls over REST (the client offers no gRPC for them).

**Outages.** weaviate-client retries gRPC calls that fail with UNAVAILABLE for up to a minute, and its REST calls
fail at once. Neither is what a caller of the indexer wants, so the store watches Weaviate itself: a monitor task
probes ``/v1/.well-known/ready`` and gRPC health every ``health_interval_seconds`` (at once after a call saw a
connection error). While Weaviate is down every call answers ``Unavailable`` immediately, calls in flight when the
outage is noticed are cancelled with ``Unavailable``, and the health callback reports NOT_SERVING; when the probes
succeed again the store reconnects (a fresh client when the old one never connected) and reports SERVING. Every call
is also bounded by the query/write timeout and the caller's deadline, whichever is sooner.

**Writes.** An upsert is sent in batches of ``batch_size`` objects. Weaviate answers a batch with per-object errors;
the objects that failed (and whole batches that failed for a transient reason) are retried with exponential backoff
up to ``write_attempts`` tries. The call succeeds only when Weaviate confirmed every object; otherwise it fails, so
nothing is acknowledged that was not stored. Writes are idempotent (the object id is the chunk id), which is what
makes the retries and a caller's retry safe.

**Schema.** One Weaviate collection per lorag collection, multi-tenant with automatic tenant creation and
activation, one self-provided named vector ``default`` with an HNSW index, BM25 on ``text`` and ``title``. The
collection's lorag settings that Weaviate does not keep (vector dimensions, embedding model, description) are
stored as a JSON envelope in the Weaviate collection description; collections without it were not created by lorag
and are invisible to the indexer. Metadata keys are flattened into ``meta_<key>`` properties created on first use,
because Weaviate can only filter flat properties (see docs/indexer.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
import httpx
import weaviate
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from weaviate.classes.aggregate import GroupByAggregate, Metrics
from weaviate.classes.config import (
    Configure,
    ConsistencyLevel,
    DataType,
    Property,
    Tokenization,
    VectorDistances,
)
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, GrpcConfig, Timeout
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery, Sort
from weaviate.classes.tenants import TenantActivityStatus
from weaviate.client import WeaviateAsyncClient
from weaviate.exceptions import (
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateInsertManyAllFailedError,
    WeaviateRetryError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from lorag_core.errors import AlreadyExists, DeadlineExceeded, LoragError, NotFound, Unavailable
from lorag_core.interceptors import remaining_time
from lorag_core.telemetry import get_logger
from lorag_indexer.backends import (
    Bm25Settings,
    ChunkData,
    CollectionInfo,
    DeleteResult,
    Distance,
    DocumentState,
    Fusion,
    Hit,
    HnswSettings,
    MetadataType,
    Page,
    SearchMode,
    SearchQuery,
    SearchResult,
    Tenant,
    TenantActivity,
    TypedValue,
    UpsertResult,
)
from lorag_indexer.config import IndexerSettings
from lorag_indexer.convert import METADATA_PREFIX, check_chunks_against, metadata_property

log = get_logger(__name__)

T = TypeVar("T")

VECTOR_NAME = "default"
ENVELOPE_KEY = "lorag"
ENVELOPE_VERSION = 1
# Objects read per request while ListDocuments discovers the next document ids in order.
LIST_SCAN_OBJECTS = 1000
# Documents per delete/aggregate filter (each adds one operand to the filter Weaviate evaluates).
DOCUMENTS_PER_FILTER = 100

# Properties every chunk has, read back on every hit.
CHUNK_PROPERTIES = [
    "text",
    "title",
    "document_id",
    "source_uri",
    "content_sha256",
    "chunk_index",
    "token_count",
    "char_start",
    "char_end",
]

_WEAVIATE_TYPES = {
    MetadataType.STRING: DataType.TEXT,
    MetadataType.INT: DataType.INT,
    MetadataType.DOUBLE: DataType.NUMBER,
    MetadataType.BOOL: DataType.BOOL,
    MetadataType.TIMESTAMP: DataType.DATE,
    MetadataType.STRING_LIST: DataType.TEXT_ARRAY,
    MetadataType.INT_LIST: DataType.INT_ARRAY,
    MetadataType.DOUBLE_LIST: DataType.NUMBER_ARRAY,
    MetadataType.BOOL_LIST: DataType.BOOL_ARRAY,
}
_METADATA_TYPES = {dt.value: mt for mt, dt in _WEAVIATE_TYPES.items()}

_ACTIVITY = {
    TenantActivityStatus.ACTIVE: TenantActivity.ACTIVE,
    TenantActivityStatus.INACTIVE: TenantActivity.INACTIVE,
    TenantActivityStatus.OFFLOADED: TenantActivity.OFFLOADED,
}

# The weaviate-client query each search mode runs, as the client span's db.operation.name.
_QUERY_OPERATION = {SearchMode.VECTOR: "near_vector", SearchMode.KEYWORD: "bm25", SearchMode.HYBRID: "hybrid"}

_FUSION = {Fusion.RANKED: HybridFusion.RANKED, Fusion.RELATIVE_SCORE: HybridFusion.RELATIVE_SCORE}

# Short reconnect backoff: after an outage the channel reconnects within about a second (gRPC's default backoff
# grows to two minutes, which would keep the indexer failing long after Weaviate is back).
_CHANNEL_OPTIONS = [
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
def _weaviate_clock() -> Iterator[list[int]]:
    total = [0]
    token = _weaviate_ns.set(total)
    try:
        yield total
    finally:
        _weaviate_ns.reset(token)


# -- schema ---------------------------------------------------------------------------------------------------------


def _text(name: str, *, searchable: bool = False, filterable: bool = True) -> Property:
    return Property(
        name=name,
        data_type=DataType.TEXT,
        tokenization=Tokenization.WORD if searchable else Tokenization.FIELD,
        index_searchable=searchable,
        index_filterable=filterable,
    )


def _builtin_properties() -> list[Property]:
    """The chunk's own fields. ``title`` is stored twice: word-tokenized for BM25, whole for filters."""
    return [
        _text("text", searchable=True, filterable=False),
        _text("title", searchable=True, filterable=False),
        _text("title_exact"),
        _text("document_id"),
        _text("source_uri"),
        _text("content_sha256"),
        Property(name="chunk_index", data_type=DataType.INT, index_filterable=True, index_range_filters=True),
        Property(name="token_count", data_type=DataType.INT, index_filterable=True, index_range_filters=True),
        Property(name="char_start", data_type=DataType.INT, index_filterable=False, index_range_filters=False),
        Property(name="char_end", data_type=DataType.INT, index_filterable=False, index_range_filters=False),
    ]


def metadata_schema_property(key: str, mtype: MetadataType) -> Property:
    """A ``meta_<key>`` property: filterable, whole-value tokenized text, range-indexed scalars."""
    data_type = _WEAVIATE_TYPES[mtype]
    if mtype.element is MetadataType.STRING:
        return Property(
            name=metadata_property(key),
            data_type=data_type,
            tokenization=Tokenization.FIELD,
            index_searchable=False,
            index_filterable=True,
        )
    ranged = mtype in (MetadataType.INT, MetadataType.DOUBLE, MetadataType.TIMESTAMP)
    return Property(name=metadata_property(key), data_type=data_type, index_filterable=True, index_range_filters=ranged)


def _envelope(info: CollectionInfo) -> str:
    return json.dumps(
        {
            ENVELOPE_KEY: {
                "v": ENVELOPE_VERSION,
                "dimensions": info.dimensions,
                "embedding_model": info.embedding_model,
                "description": info.description,
            }
        },
        separators=(",", ":"),
    )


def _info_from_config(config: Any) -> CollectionInfo | None:
    """A lorag collection from a Weaviate CollectionConfig, or None when lorag did not create it."""
    try:
        envelope = json.loads(config.description or "")[ENVELOPE_KEY]
        dimensions = int(envelope["dimensions"])
        vector = (config.vector_config or {})[VECTOR_NAME].vector_index_config
        if not config.multi_tenancy_config.enabled:
            return None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    metadata: dict[str, MetadataType] = {}
    for prop in config.properties:
        if prop.name.startswith(METADATA_PREFIX):
            mtype = _METADATA_TYPES.get(getattr(prop.data_type, "value", prop.data_type))
            if mtype is not None:
                metadata[prop.name[len(METADATA_PREFIX) :]] = mtype
    bm25 = config.inverted_index_config.bm25
    return CollectionInfo(
        name=config.name,
        dimensions=dimensions,
        hnsw=HnswSettings(
            distance=Distance(getattr(vector.distance_metric, "value", vector.distance_metric)),
            ef=int(vector.ef),
            ef_construction=int(vector.ef_construction),
            max_connections=int(vector.max_connections),
        ),
        bm25=Bm25Settings(k1=float(bm25.k1), b=float(bm25.b)),
        embedding_model=str(envelope.get("embedding_model", "")),
        description=str(envelope.get("description", "")),
        metadata_fields=metadata,
    )


# -- values ---------------------------------------------------------------------------------------------------------


def _properties(chunk: ChunkData) -> dict[str, Any]:
    props: dict[str, Any] = {
        "text": chunk.text,
        "title": chunk.title,
        "title_exact": chunk.title,
        "document_id": chunk.document_id,
        "source_uri": chunk.source_uri,
        "content_sha256": chunk.content_sha256,
        "chunk_index": chunk.chunk_index,
        "token_count": chunk.token_count,
        "char_start": chunk.char_start,
        "char_end": chunk.char_end,
    }
    for key, typed in chunk.metadata.items():
        props[metadata_property(key)] = typed.value
    return props


def _chunk_from_object(obj: Any, info: CollectionInfo, keys: list[str] | None, with_vector: bool) -> ChunkData:
    p = obj.properties
    metadata: dict[str, TypedValue] = {}
    for key, mtype in info.metadata_fields.items():
        if keys is not None and key not in keys:
            continue
        value = p.get(metadata_property(key))
        if value is None:
            continue
        metadata[key] = TypedValue(mtype, value)
    vector = None
    if with_vector and obj.vector:
        raw = obj.vector.get(VECTOR_NAME) if isinstance(obj.vector, dict) else obj.vector
        vector = [float(x) for x in raw] if raw is not None else None
    return ChunkData(
        chunk_id=str(obj.uuid),
        document_id=p.get("document_id") or "",
        text=p.get("text") or "",
        char_start=int(p.get("char_start") or 0),
        char_end=int(p.get("char_end") or 0),
        token_count=int(p.get("token_count") or 0),
        chunk_index=int(p.get("chunk_index") or 0),
        title=p.get("title") or "",
        source_uri=p.get("source_uri") or "",
        content_sha256=p.get("content_sha256") or "",
        metadata=metadata,
        vector=vector,
    )


def vector_distance(metric: Distance, a: list[float], b: list[float]) -> float:
    """The distance Weaviate would report between ``a`` and ``b`` under ``metric``."""
    if metric is Distance.COSINE:
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        if na == 0 or nb == 0:
            return 1.0
        return min(max(1.0 - sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb), 0.0), 2.0)
    if metric is Distance.DOT:
        return -sum(x * y for x, y in zip(a, b, strict=True))
    if metric is Distance.L2_SQUARED:
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    if metric is Distance.MANHATTAN:
        return sum(abs(x - y) for x, y in zip(a, b, strict=True))
    return float(sum(1 for x, y in zip(a, b, strict=True) if x != y))


def similarity(metric: Distance, distance: float) -> float:
    """Vector-mode score, higher is better: 1 - distance for cosine, the dot product for dot, -distance otherwise."""
    return 1.0 - distance if metric is Distance.COSINE else -distance


def _chunks_of(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- errors ---------------------------------------------------------------------------------------------------------

_CONNECTION_ERRORS = (
    WeaviateConnectionError,
    WeaviateStartUpError,
    WeaviateClosedClientError,
    WeaviateGRPCUnavailableError,
    WeaviateTimeoutError,
    WeaviateRetryError,
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
)
_CONNECTION_MARKERS = (
    "unavailable",
    "failed to connect",
    "connection refused",
    "connect: connection",
    "deadline exceeded",
    "deadline_exceeded",
    "socket closed",
    "connection reset",
    "broken pipe",
)


class _RetryableError(Exception):
    """A write attempt that may succeed if tried again; carries the error to report when tries run out."""

    def __init__(self, error: LoragError) -> None:
        super().__init__(error.message)
        self.error = error


class WeaviateStore:
    """The indexer's store on Weaviate; see the module docstring. Create, ``await start()``, use, ``await close()``."""

    def __init__(
        self,
        settings: IndexerSettings,
        *,
        tracer: trace.Tracer | None = None,
        meter: Any = None,
        on_availability: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._tracer = tracer or trace.get_tracer("lorag.indexer")
        self.on_availability = on_availability
        self._client: WeaviateAsyncClient | None = None
        self._up = False
        self._ever_up = asyncio.Event()
        self._wake = asyncio.Event()
        self._monitor_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._outage_cancelled: set[asyncio.Task[Any]] = set()
        self._unsure_probes = 0
        self._last_problem = "not connected yet"
        self._schemas: dict[str, tuple[float, CollectionInfo]] = {}
        self._schema_locks: dict[str, asyncio.Lock] = {}
        self._http: httpx.AsyncClient | None = None
        self._probe_channel: grpc.aio.Channel | None = None
        self._closed = False
        self._consistency = ConsistencyLevel(settings.consistency_level)
        self._metrics(meter)

    def _metrics(self, meter: Any) -> None:
        self._written = self._retries = None
        if meter is None:
            return
        from opentelemetry.metrics import Observation

        self._written = meter.create_counter(
            "lorag.indexer.chunks.written", unit="{chunk}", description="Chunks Weaviate confirmed."
        )
        self._retries = meter.create_counter(
            "lorag.indexer.weaviate.write_retries", unit="{retry}", description="Weaviate write attempts retried."
        )

        def up(_options: Any) -> Iterator[Observation]:
            yield Observation(1 if self._up else 0)

        meter.create_observable_gauge(
            "lorag.indexer.weaviate.up", callbacks=[up], unit="1", description="1 while Weaviate answers probes."
        )

    # -- lifecycle -------------------------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True while Weaviate answers the probes and a client is connected."""
        return self._up and self._client is not None

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
                    s.weaviate_grpc_address, grpc.ssl_channel_credentials(), options=_CHANNEL_OPTIONS
                )
            else:
                self._probe_channel = grpc.aio.insecure_channel(s.weaviate_grpc_address, options=_CHANNEL_OPTIONS)
            self._monitor_task = asyncio.create_task(self._monitor(), name="lorag-indexer-weaviate-monitor")
        if not wait:
            return
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
                        metadata={"dependency": "weaviate"},
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
            await self._probe_channel.close()

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
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive any surprise
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
        s = self.settings
        client = weaviate.use_async_with_custom(
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
                grpc_config=GrpcConfig(channel_options=_CHANNEL_OPTIONS),
            ),
            skip_init_checks=True,  # the monitor's probes are the checks
        )
        try:
            await client.connect()
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; the next probe tries again
            self._last_problem = f"connect failed: {exc!r}"
            with contextlib.suppress(Exception):
                await client.close()
            return _REFUSED
        self._client = client
        log.info("connected to weaviate", url=s.weaviate_http_url, grpc=s.weaviate_grpc_address)
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
            except Exception as exc:  # noqa: BLE001 - a health hook must never stop the monitor
                log.warning("availability hook failed", error=repr(exc))

    # -- calling Weaviate ------------------------------------------------------------------------------------------

    def _outage(self, what: str) -> Unavailable:
        return Unavailable(
            f"Weaviate is unreachable ({self._last_problem}); cannot {what}. Retry later.",
            metadata={"dependency": "weaviate", "url": self.settings.weaviate_http_url},
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

    async def _call(
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
        client = self._client
        if client is None or not self._up or self._closed:
            raise self._outage(what)
        with self._client_span(operation or what, collection, tenant, rest):
            return await self._timed_call(what, fn, write, collection, tenant)

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
        return self._tracer.start_as_current_span(
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
            raise self._outage(what)
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
                reason="DEPENDENCY_TIMEOUT",
                metadata={"dependency": "weaviate", "timeout_s": f"{budget:g}"},
            )
        if task.cancelled():
            if outage or self._closed:
                raise self._outage(what)
            raise asyncio.CancelledError()
        exc = task.exception()
        if exc is not None:
            raise self._map_error(exc, what, collection, tenant) from exc
        return task.result()

    def _map_error(self, exc: BaseException, what: str, collection: str | None, tenant: str | None) -> LoragError:
        """Weaviate's errors in lorag's terms; anything unrecognised is UNAVAILABLE, never INTERNAL."""
        if isinstance(exc, LoragError):
            return exc
        message = str(getattr(exc, "message", "") or exc)
        low = message.lower()
        meta = {"dependency": "weaviate"}
        status = getattr(exc, "status_code", None) if isinstance(exc, UnexpectedStatusCodeError) else None
        missing = self._not_found(message, collection, tenant, http_404=status == 404)
        if missing is not None:
            return missing
        if isinstance(exc, InsufficientPermissionsError) or status in (401, 403):
            return Unavailable(
                f"Weaviate refused to {what}: the indexer's credentials lack permission ({message})",
                reason="DEPENDENCY_PERMISSION_DENIED",
                metadata=meta,
            )
        if "already exists" in low:
            return AlreadyExists(f"cannot {what}: {message}", reason="ALREADY_EXISTS", metadata=meta)
        if isinstance(exc, _CONNECTION_ERRORS) or any(marker in low for marker in _CONNECTION_MARKERS):
            self._wake.set()
            return Unavailable(f"cannot reach Weaviate to {what}: {message}", metadata=meta)
        if isinstance(exc, (WeaviateBaseError, grpc.aio.AioRpcError, httpx.HTTPError)):
            log.error("weaviate error", what=what, error=message, type=type(exc).__name__)
            return Unavailable(f"Weaviate failed to {what}: {message}", reason="DEPENDENCY_ERROR", metadata=meta)
        raise exc  # a bug in lorag: the interceptor answers INTERNAL with the trace id

    def _not_found(
        self, message: str, collection: str | None, tenant: str | None, *, http_404: bool = False
    ) -> NotFound | None:
        """NotFound when Weaviate's ``message`` says the tenant or the collection does not exist."""
        low = message.lower()
        if "could not find class" in low or "class not found" in low or (http_404 and collection):
            if collection:
                self._schemas.pop(collection, None)
            return NotFound(
                f"no collection named {collection!r}",
                reason="COLLECTION_NOT_FOUND",
                metadata={"collection": collection or ""},
            )
        if "tenant not found" in low or ("tenant" in low and ("not found" in low or "does not exist" in low)):
            return NotFound(
                f"collection {collection} has no tenant {tenant!r}",
                reason="TENANT_NOT_FOUND",
                metadata={"collection": collection or "", "tenant": tenant or ""},
            )
        return None

    async def _with_retries(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run a write ``attempt`` until it succeeds, with exponential backoff between tries.

        ``attempt`` raises ``_RetryableError`` for partial failures and may raise ``Unavailable``; both are retried
        while tries remain, Weaviate is up, and the caller's deadline leaves room for the wait. Other errors end at
        once.
        """
        s = self.settings
        last: LoragError | None = None
        for number in range(1, s.write_attempts + 1):
            try:
                return await attempt()
            except _RetryableError as retry:
                last = retry.error
            except Unavailable as exc:
                # Permission problems do not heal by retrying; a timed-out write means Weaviate is overloaded (or
                # still working on it), and piling the same write on again would only add to its load.
                if exc.reason in ("DEPENDENCY_PERMISSION_DENIED", "DEPENDENCY_TIMEOUT") or not self._up:
                    raise
                last = exc
            if number == s.write_attempts:
                break
            delay = min(s.write_backoff_seconds * 2 ** (number - 1), s.write_backoff_max_seconds)
            delay *= 0.5 + random.random() / 2  # jitter: replicas retrying together do not stay in step
            left = remaining_time()
            if left is not None and left <= delay:
                break
            log.warning(
                "retrying weaviate write", what=what, attempt=number, delay_s=round(delay, 3), error=last.message
            )
            trace.get_current_span().add_event("retry", {"attempt": number, "delay_s": delay})
            if self._retries is not None:
                self._retries.add(1, {"operation": what})
            await asyncio.sleep(delay)
            if not self._up:
                raise self._outage(what)
        assert last is not None
        raise last

    # -- schema ----------------------------------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._schema_locks.setdefault(name, asyncio.Lock())

    async def get_collection(self, name: str, *, fresh: bool = False) -> CollectionInfo:
        """The lorag collection ``name`` (normalised); NotFound when it does not exist or lorag did not create it."""
        cached = self._schemas.get(name)
        if cached is not None and not fresh and time.monotonic() - cached[0] < self.settings.schema_cache_seconds:
            return cached[1]

        async def read(client: WeaviateAsyncClient) -> Any:
            return await client.collections.get(name).config.get()

        try:
            config = await self._call(f"read collection {name}", read, collection=name, operation="get_collection", rest=True)
        except NotFound:
            self._schemas.pop(name, None)
            raise
        info = _info_from_config(config)
        if info is None:
            raise NotFound(
                f"Weaviate has a collection named {name!r} that lorag did not create; the indexer does not use it",
                reason="FOREIGN_COLLECTION",
                metadata={"collection": name},
            )
        self._schemas[name] = (time.monotonic(), info)
        return info

    async def create_collection(self, spec: CollectionInfo) -> CollectionInfo:
        name = spec.name
        with self._span("weaviate.collections.create", collection=name, dimensions=spec.dimensions):
            hnsw = Configure.VectorIndex.hnsw(
                distance_metric=VectorDistances(spec.hnsw.distance.value),
                ef=spec.hnsw.ef,
                ef_construction=spec.hnsw.ef_construction,
                max_connections=spec.hnsw.max_connections,
            )
            properties = _builtin_properties() + [
                metadata_schema_property(key, t) for key, t in sorted(spec.metadata_fields.items())
            ]

            async def exists(client: WeaviateAsyncClient) -> bool:
                return await client.collections.exists(name)

            async def create(client: WeaviateAsyncClient) -> None:
                await client.collections.create(
                    name,
                    description=_envelope(spec),
                    properties=properties,
                    vector_config=Configure.Vectors.self_provided(name=VECTOR_NAME, vector_index_config=hnsw),
                    multi_tenancy_config=Configure.multi_tenancy(
                        enabled=True, auto_tenant_creation=True, auto_tenant_activation=True
                    ),
                    inverted_index_config=Configure.inverted_index(
                        bm25_b=spec.bm25.b, bm25_k1=spec.bm25.k1, index_null_state=True
                    ),
                )

            collision = AlreadyExists(
                f"a collection named {name!r} exists", reason="COLLECTION_EXISTS", metadata={"collection": name}
            )
            async with self._lock(name):
                if await self._call(
                    f"check collection {name}", exists, collection=name, operation="collection_exists", rest=True
                ):
                    raise collision
                try:
                    await self._call(
                        f"create collection {name}", create, write=True, collection=name,
                        operation="create_collection", rest=True,
                    )
                except AlreadyExists:
                    raise collision from None
            self._schemas[name] = (time.monotonic(), spec)
            log.info(
                "collection created", collection=name, dimensions=spec.dimensions, distance=spec.hnsw.distance.value
            )
            return spec

    async def list_collections(self, after: str | None, limit: int) -> Page:
        async def list_all(client: WeaviateAsyncClient) -> dict[str, Any]:
            return await client.collections.list_all(simple=False)

        with self._span("weaviate.collections.list", limit=limit):
            configs = await self._call("list collections", list_all, operation="list_collections", rest=True)
            infos = sorted(
                (info for config in configs.values() if (info := _info_from_config(config)) is not None),
                key=lambda info: info.name,
            )
            if after is not None:
                infos = [info for info in infos if info.name > after]
            now = time.monotonic()
            for info in infos:
                self._schemas[info.name] = (now, info)
            return Page(items=infos[:limit], more=len(infos) > limit)

    async def delete_collection(self, name: str, allow_missing: bool) -> None:
        with self._span("weaviate.collections.delete", collection=name):
            try:
                await self.get_collection(name, fresh=True)
            except NotFound as exc:
                if allow_missing and exc.reason == "COLLECTION_NOT_FOUND":
                    return
                raise

            async def delete(client: WeaviateAsyncClient) -> None:
                await client.collections.delete(name)

            async with self._lock(name):
                await self._call(
                    f"delete collection {name}", delete, write=True, collection=name,
                    operation="delete_collection", rest=True,
                )
                self._schemas.pop(name, None)
            log.info("collection deleted", collection=name)

    async def _ensure_metadata(self, info: CollectionInfo, chunks: list[ChunkData]) -> CollectionInfo:
        """Create the ``meta_<key>`` properties this batch needs; refuse values whose type conflicts."""
        missing = {
            key: typed.type
            for chunk in chunks
            for key, typed in chunk.metadata.items()
            if key not in info.metadata_fields
        }
        if not missing:
            return info
        async with self._lock(info.name):
            info = await self.get_collection(info.name, fresh=True)
            check_chunks_against(info, chunks)  # another writer may have typed a key differently meanwhile
            for key, mtype in sorted(missing.items()):
                if key in info.metadata_fields:
                    continue
                prop = metadata_schema_property(key, mtype)

                async def add(client: WeaviateAsyncClient, prop: Property = prop) -> None:
                    await client.collections.get(info.name).config.add_property(prop)

                with contextlib.suppress(AlreadyExists):  # a concurrent writer won; the re-read below decides
                    await self._call(
                        f"add metadata key {key!r}", add, write=True, collection=info.name,
                        operation="add_property", rest=True,
                    )
                log.info("metadata key added", collection=info.name, key=key, type=mtype.value)
            info = await self.get_collection(info.name, fresh=True)
        check_chunks_against(info, chunks)
        return info

    # -- tenants ---------------------------------------------------------------------------------------------------

    async def list_tenants(self, collection: str, after: str | None, limit: int) -> Page:
        with self._span("weaviate.tenants.list", collection=collection, limit=limit):
            await self.get_collection(collection)

            async def get(client: WeaviateAsyncClient) -> dict[str, Any]:
                return await client.collections.get(collection).tenants.get()

            tenants = await self._call(
                f"list tenants of {collection}", get, collection=collection, operation="list_tenants"
            )
            names = sorted(n for n in tenants if after is None or n > after)
            items = [
                Tenant(n, _ACTIVITY.get(tenants[n].activity_status, TenantActivity.UNSPECIFIED)) for n in names[:limit]
            ]
            return Page(items=items, more=len(names) > limit)

    async def delete_tenant(self, collection: str, tenant: str, allow_missing: bool) -> None:
        with self._span("weaviate.tenants.delete", collection=collection, tenant=tenant):
            await self.get_collection(collection)

            async def get(client: WeaviateAsyncClient) -> Any:
                return await client.collections.get(collection).tenants.get_by_name(tenant)

            async def remove(client: WeaviateAsyncClient) -> None:
                await client.collections.get(collection).tenants.remove([tenant])

            if await self._call(
                f"read tenant {tenant}", get, collection=collection, tenant=tenant, operation="get_tenant"
            ) is None:
                if allow_missing:
                    return
                raise NotFound(
                    f"collection {collection} has no tenant {tenant!r}",
                    reason="TENANT_NOT_FOUND",
                    metadata={"collection": collection, "tenant": tenant},
                )
            await self._call(
                f"delete tenant {tenant}", remove, write=True, collection=collection, tenant=tenant,
                operation="delete_tenant", rest=True,
            )
            log.info("tenant deleted", collection=collection, tenant=tenant)

    # -- writes ----------------------------------------------------------------------------------------------------

    def _tenant_view(self, client: WeaviateAsyncClient, collection: str, tenant: str) -> Any:
        return client.collections.get(collection).with_tenant(tenant).with_consistency_level(self._consistency)

    async def upsert(
        self, info: CollectionInfo, tenant: str, chunks: list[ChunkData], delete_stale: bool
    ) -> UpsertResult:
        name = info.name
        with (
            self._span(
                "weaviate.upsert", collection=name, tenant=tenant, chunks=len(chunks), delete_stale=delete_stale
            ) as span,
            _weaviate_clock() as clock,
        ):
            info = await self._ensure_metadata(info, chunks)
            objects = [
                DataObject(uuid=c.chunk_id, properties=_properties(c), vector={VECTOR_NAME: c.vector or []})
                for c in chunks
            ]
            for batch in _chunks_of(objects, self.settings.batch_size):
                await self._write_batch(name, tenant, batch)
            if self._written is not None:
                self._written.add(len(objects), {"collection": name})
            deleted = 0
            if delete_stale:
                hashes = {c.document_id: c.content_sha256 for c in chunks}
                deleted = await self._delete_stale(name, tenant, hashes)
            span.set_attribute("lorag.indexer.deleted_stale", deleted)
            return UpsertResult(upserted=len(objects), deleted_stale=deleted, weaviate_ns=clock[0])

    async def _write_batch(self, collection: str, tenant: str, batch: list[DataObject[Any, Any]]) -> None:
        pending = batch

        async def insert(client: WeaviateAsyncClient) -> dict[int, str]:
            try:
                result = await self._tenant_view(client, collection, tenant).data.insert_many(pending)
            except WeaviateInsertManyAllFailedError as exc:
                return {i: str(exc) for i in range(len(pending))}
            return {index: error.message for index, error in result.errors.items()}

        async def attempt() -> None:
            nonlocal pending
            errors = await self._call(
                f"write {len(pending)} chunks", insert, write=True, collection=collection, tenant=tenant,
                operation="insert_many",
            )
            if not errors:
                return
            first = next(iter(errors.values()))
            missing = self._not_found(first, collection, tenant)
            if missing is not None:
                raise missing
            pending = [pending[i] for i in sorted(errors)]
            raise _RetryableError(
                Unavailable(
                    f"Weaviate did not confirm {len(pending)} of {len(batch)} chunks: {first}",
                    reason="WRITE_INCOMPLETE",
                    metadata={"dependency": "weaviate", "failed": str(len(pending))},
                )
            )

        await self._with_retries("write chunks", attempt)

    async def _delete_where(self, collection: str, tenant: str, where: Any, what: str) -> int:
        """Delete every object matching ``where`` (in rounds of at most max_query_results); return how many."""
        deleted = 0

        async def delete(client: WeaviateAsyncClient) -> Any:
            return await self._tenant_view(client, collection, tenant).data.delete_many(where=where)

        async def attempt() -> Any:
            result = await self._call(
                what, delete, write=True, collection=collection, tenant=tenant, operation="delete_many"
            )
            if result.failed:
                nonlocal deleted
                deleted += result.successful
                raise _RetryableError(
                    Unavailable(
                        f"Weaviate failed to delete {result.failed} of {result.matches} chunks",
                        reason="WRITE_INCOMPLETE",
                        metadata={"dependency": "weaviate", "failed": str(result.failed)},
                    )
                )
            return result

        while True:
            result = await self._with_retries(what, attempt)
            deleted += result.successful
            if result.matches < self.settings.max_query_results:
                return deleted

    async def _delete_stale(self, collection: str, tenant: str, hashes: dict[str, str]) -> int:
        deleted = 0
        docs = sorted(hashes)
        for group in _chunks_of(docs, DOCUMENTS_PER_FILTER):
            clauses = [
                Filter.all_of(
                    [
                        Filter.by_property("document_id").equal(doc),
                        Filter.by_property("content_sha256").not_equal(hashes[doc]),
                    ]
                )
                for doc in group
            ]
            where = clauses[0] if len(clauses) == 1 else Filter.any_of(clauses)
            deleted += await self._delete_where(collection, tenant, where, "delete stale chunks")
        return deleted

    async def delete_documents(self, info: CollectionInfo, tenant: str, document_ids: list[str]) -> DeleteResult:
        name = info.name
        with self._span(
            "weaviate.delete_documents", collection=name, tenant=tenant, documents=len(document_ids)
        ) as span:
            stats = await self._document_stats(name, tenant, list(dict.fromkeys(document_ids)))
            found = sorted(stats)
            chunks = 0
            for group in _chunks_of(found, DOCUMENTS_PER_FILTER):
                where = Filter.by_property("document_id").contains_any(group)
                chunks += await self._delete_where(name, tenant, where, "delete documents")
            span.set_attribute("lorag.indexer.deleted_chunks", chunks)
            return DeleteResult(documents=len(found), chunks=chunks)

    # -- document states -------------------------------------------------------------------------------------------

    async def _document_stats(self, collection: str, tenant: str, ids: list[str]) -> dict[str, DocumentState]:
        """Per document id that has chunks: its chunk count, agreed content hash, title and source URI."""
        states: dict[str, DocumentState] = {}
        for group in _chunks_of(ids, 1000):

            async def aggregate(client: WeaviateAsyncClient, group: list[str] = group) -> Any:
                return await self._tenant_view(client, collection, tenant).aggregate.over_all(
                    filters=Filter.by_property("document_id").contains_any(group),
                    group_by=GroupByAggregate(prop="document_id", limit=len(group)),
                    total_count=True,
                    return_metrics=[
                        Metrics("content_sha256").text(top_occurrences_count=True, top_occurrences_value=True, limit=2),
                        Metrics("title_exact").text(top_occurrences_count=True, top_occurrences_value=True, limit=1),
                        Metrics("source_uri").text(top_occurrences_count=True, top_occurrences_value=True, limit=1),
                    ],
                )

            result = await self._call(
                "read document states", aggregate, collection=collection, tenant=tenant, operation="aggregate"
            )
            for g in result.groups:
                doc = str(g.grouped_by.value)
                count = int(g.total_count or 0)
                if count == 0:
                    continue
                hashes = g.properties["content_sha256"].top_occurrences
                agreed = len(hashes) == 1 and hashes[0].count == count
                titles = g.properties["title_exact"].top_occurrences
                uris = g.properties["source_uri"].top_occurrences
                states[doc] = DocumentState(
                    document_id=doc,
                    exists=True,
                    content_sha256=str(hashes[0].value) if agreed else "",
                    chunk_count=count,
                    title=str(titles[0].value) if titles else "",
                    source_uri=str(uris[0].value) if uris else "",
                )
        return states

    async def document_states(self, info: CollectionInfo, tenant: str, document_ids: list[str]) -> list[DocumentState]:
        with self._span("weaviate.document_states", collection=info.name, tenant=tenant, documents=len(document_ids)):
            try:
                stats = await self._document_stats(info.name, tenant, list(dict.fromkeys(document_ids)))
            except NotFound as exc:
                if exc.reason != "TENANT_NOT_FOUND":
                    raise
                stats = {}  # the contract: a missing tenant holds no documents
            return [stats.get(doc) or DocumentState(document_id=doc, exists=False) for doc in document_ids]

    async def list_documents(self, info: CollectionInfo, tenant: str, after: str | None, limit: int) -> Page:
        name = info.name
        with self._span("weaviate.list_documents", collection=name, tenant=tenant, limit=limit):
            ids: list[str] = []
            cursor = after
            while len(ids) <= limit:
                where = Filter.by_property("document_id").greater_than(cursor) if cursor is not None else None

                async def scan(client: WeaviateAsyncClient, where: Any = where) -> Any:
                    return await self._tenant_view(client, name, tenant).query.fetch_objects(
                        filters=where,
                        sort=Sort.by_property("document_id", ascending=True),
                        limit=LIST_SCAN_OBJECTS,
                        return_properties=["document_id"],
                    )

                objects = (await self._call(
                    "list documents", scan, collection=name, tenant=tenant, operation="fetch_objects"
                )).objects
                for obj in objects:
                    doc = obj.properties.get("document_id") or ""
                    if not ids or ids[-1] != doc:
                        ids.append(doc)
                if len(objects) < LIST_SCAN_OBJECTS:
                    break
                cursor = objects[-1].properties.get("document_id") or ""
            more = len(ids) > limit
            ids = ids[:limit]
            stats = await self._document_stats(name, tenant, ids) if ids else {}
            return Page(items=[stats[doc] for doc in ids if doc in stats], more=more)

    # -- search ----------------------------------------------------------------------------------------------------

    async def search(self, info: CollectionInfo, tenant: str, query: SearchQuery) -> SearchResult:
        name = info.name
        attributes = {
            "collection": name,
            "tenant": tenant,
            "mode": query.mode.value,
            "limit": query.limit,
            "offset": query.offset,
            "filtered": query.filter is not None,
        }
        with self._span("weaviate.search", **attributes) as span:
            keys = query.metadata_keys
            selected = info.metadata_fields if keys is None else {k: info.metadata_fields[k] for k in keys}
            properties = CHUNK_PROPERTIES + [metadata_property(k) for k in selected]
            # Hybrid results carry no distance; the stored vectors let us compute it.
            fetch_vectors = query.include_vectors or query.mode is SearchMode.HYBRID
            metadata = MetadataQuery(
                distance=query.mode is SearchMode.VECTOR,
                score=query.mode is not SearchMode.VECTOR,
                explain_score=query.include_explanation,
            )

            async def run(client: WeaviateAsyncClient) -> Any:
                q = self._tenant_view(client, name, tenant).query
                common = {
                    "limit": query.limit,
                    "offset": query.offset or None,
                    "filters": query.filter,
                    "return_metadata": metadata,
                    "return_properties": properties,
                    "include_vector": fetch_vectors,
                }
                if query.mode is SearchMode.VECTOR:
                    return await q.near_vector(near_vector=query.vector, distance=query.max_vector_distance, **common)
                if query.mode is SearchMode.KEYWORD:
                    return await q.bm25(query=query.text, query_properties=query.keyword_properties, **common)
                return await q.hybrid(
                    query=query.text,
                    vector=query.vector,
                    alpha=query.alpha,
                    fusion_type=_FUSION[query.fusion],
                    query_properties=query.keyword_properties,
                    max_vector_distance=query.max_vector_distance,
                    **common,
                )

            with _weaviate_clock() as clock:
                result = await self._call("search", run, collection=name, tenant=tenant, operation=_QUERY_OPERATION[query.mode])
            weaviate_ns = clock[0]
            metric = info.hnsw.distance
            hits: list[Hit] = []
            for obj in result.objects:
                chunk = _chunk_from_object(obj, info, keys, fetch_vectors)
                md = obj.metadata
                distance: float | None = None
                if query.mode is SearchMode.VECTOR:
                    distance = float(md.distance) if md.distance is not None else None
                    score = similarity(metric, distance) if distance is not None else 0.0
                else:
                    score = float(md.score or 0.0)
                    if query.mode is SearchMode.HYBRID and chunk.vector is not None and query.vector is not None:
                        distance = vector_distance(metric, query.vector, chunk.vector)
                if not query.include_vectors:
                    chunk.vector = None
                explanation = (md.explain_score or "").strip() if query.include_explanation else ""
                hits.append(Hit(chunk=chunk, score=score, distance=distance, explanation=explanation))
            span.set_attribute("lorag.indexer.hits", len(hits))
            return SearchResult(hits=hits, weaviate_ns=weaviate_ns)

    # -- tracing ---------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _span(self, name: str, **attributes: Any) -> Iterator[trace.Span]:
        """A child span for one domain step; attributes are ids and sizes, never document text."""
        with self._tracer.start_as_current_span(
            name, attributes={f"lorag.indexer.{k}": v for k, v in attributes.items()}
        ) as span:
            span.set_attribute("db.system", "weaviate")
            yield span


__all__ = ["WeaviateStore", "metadata_schema_property", "similarity", "vector_distance"]
