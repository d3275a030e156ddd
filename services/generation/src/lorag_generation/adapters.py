"""The adapter manager: which LoRA adapters are known, which are resident, and what a request's name resolves to.

The backend only attaches and detaches weights under internal names; this module owns the public names and the
rules around them, the same for every backend:

* **Sources**: a folder holding a PEFT adapter (``adapter_config.json`` + weights), a ``file://`` URI, another
  artifact URI (downloaded with MLflow when it is installed), or a registry reference resolved through an
  :class:`AdapterRegistry` (the training service's ``GetAdapterVersion``).
* **Checks before attaching**: the adapter's ``base_model_name_or_path`` must name the served model (its id, its
  resolved folder, or a folder of the same name), else FAILED_PRECONDITION naming both; its rank must not exceed
  the backend's ``max_lora_rank``.
* **Residency**: at most ``max_loaded_adapters`` at once. Loading past that evicts the least recently used adapter
  that is neither pinned nor serving a request; an evicted adapter is reloaded by the next request naming it.
* **Switching without failures**: a public name points at an internal name. Replacing the source, or an alias
  moving (``follow_alias``), loads the new weights under a fresh internal name, repoints the public name between
  requests, and unloads the old weights once the requests still using them finish.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from lorag_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from lorag_core.pagination import decode_page_token, encode_page_token, page_size
from lorag_core.telemetry import get_logger
from lorag_generation.backends.base import AdapterFiles, AdapterHandle, GenerationBackend, ModelInfo
from lorag_generation.convert import AdapterReference, parse_adapter_reference, validate_adapter_name

log = get_logger(__name__)

#: Adapter states, as ``Adapter.State`` in generation_service.proto.
LOADING, LOADED, EVICTED, FAILED = "LOADING", "LOADED", "EVICTED", "FAILED"
#: The page tokens of ListAdapters name the RPC that issued them (lorag_core.pagination).
LIST_ADAPTERS = "ListAdapters"


# -- adapter files ----------------------------------------------------------------------------------------------------


def read_adapter_files(folder: str | os.PathLike[str]) -> AdapterFiles:
    """What a PEFT adapter folder declares; NOT_FOUND when it is not one."""
    path = Path(folder).expanduser()
    config_path = path / "adapter_config.json"
    if not path.is_dir() or not config_path.is_file():
        raise NotFound(
            f"no PEFT adapter at {str(path)!r} (expected a folder with adapter_config.json)", reason="ADAPTER_NOT_FOUND"
        )
    if not any(path.glob("adapter_model.*")):
        raise NotFound(
            f"{str(path)!r} has an adapter_config.json but no adapter_model weights", reason="ADAPTER_NOT_FOUND"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"{config_path} is not valid JSON: {exc}", reason="ADAPTER_INVALID") from None
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise FailedPrecondition(
            f"the adapter at {str(path)!r} is {peft_type}, only LoRA is served", reason="ADAPTER_UNSUPPORTED"
        )
    targets = config.get("target_modules") or ()
    if isinstance(targets, str):
        targets = (targets,)
    return AdapterFiles(
        path=str(path.resolve()),
        base_model=str(config.get("base_model_name_or_path") or ""),
        rank=int(config.get("r", 0) or 0),
        lora_alpha=float(config.get("lora_alpha", 0) or 0),
        target_modules=tuple(sorted(str(t) for t in targets)),
    )


def model_identities(info: ModelInfo) -> tuple[str, ...]:
    """Every way the served model may be named: its id, its configured reference and its resolved folder."""
    names = [info.model, info.extra.get("model_reference", ""), info.extra.get("model_path", "")]
    return tuple(dict.fromkeys(n for n in names if n))


def base_model_matches(adapter_base: str, identities: tuple[str, ...]) -> bool:
    """Whether an adapter trained on ``adapter_base`` fits the served model: the same id, the same resolved
    folder, or the same final name ("HuggingFaceTB/SmolLM2-135M-Instruct" and ".../models/SmolLM2-135M-Instruct")."""
    if not adapter_base:
        return True  # the config does not say; nothing to contradict
    if adapter_base in identities:
        return True
    base_path = Path(adapter_base).expanduser()
    for identity in identities:
        if base_path.exists() and Path(identity).exists() and base_path.resolve() == Path(identity).resolve():
            return True
    tail = adapter_base.rstrip("/").rsplit("/", 1)[-1].lower()
    return any(tail == identity.rstrip("/").rsplit("/", 1)[-1].lower() for identity in identities)


def local_folder(source_uri: str) -> str:
    """A local folder for ``source_uri``: a path, a ``file://`` URI, or another artifact URI downloaded by MLflow."""
    parsed = urlparse(source_uri)
    if parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
        return unquote(parsed.path) if parsed.scheme == "file" else source_uri
    try:
        import mlflow.artifacts
    except ImportError:
        raise FailedPrecondition(
            f"cannot fetch {source_uri!r}: the {parsed.scheme!r} scheme needs MLflow, which is not installed "
            "(install lorag-generation[remote-artifacts])",
            reason="ADAPTER_SOURCE_UNSUPPORTED",
        ) from None
    try:
        return str(mlflow.artifacts.download_artifacts(artifact_uri=source_uri))
    except Exception as exc:  # MLflow raises many kinds; the caller needs one answer
        raise Unavailable(
            f"cannot download the adapter at {source_uri!r}: {exc}", reason="ADAPTER_DOWNLOAD_FAILED"
        ) from None


def _source_key(source_uri: str) -> str:
    """What makes two source URIs "the same source": the resolved folder for local ones, the URI otherwise."""
    parsed = urlparse(source_uri)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else source_uri
        return "path:" + str(Path(path).expanduser().resolve())
    return "uri:" + source_uri


# -- the registry -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryVersion:
    """One registered adapter version: the answer to a registry lookup."""

    version: str
    alias: str
    source_uri: str


class AdapterRegistry(Protocol):
    """Resolves registered adapter names to versions and their files."""

    async def resolve(self, name: str, alias: str | None, version: str | None) -> RegistryVersion:
        """``alias`` or ``version`` (at most one) select the version; neither means the latest.
        Raises NotFound when the name, alias or version does not exist, Unavailable when the registry is down."""

    async def close(self) -> None: ...


class TrainingServiceRegistry:
    """The training service's registry (``GetAdapterVersion``), through the SDK's ``TrainingClient``: retried as
    the contract allows, failures raised as lorag errors (NotFound, Unavailable naming "training")."""

    def __init__(self, address: str) -> None:
        from lorag_client import TrainingClient

        self._client = TrainingClient(address, timeout=30)
        self.address = address

    async def resolve(self, name: str, alias: str | None, version: str | None) -> RegistryVersion:
        reference = f"{name}@{alias or version}" if (alias or version) else name
        found = await self._client.get_adapter_version(reference)
        return RegistryVersion(version=found.version, alias=alias or "", source_uri=found.source_uri)

    async def close(self) -> None:
        await self._client.close()


# -- the manager ------------------------------------------------------------------------------------------------------


@dataclass
class AdapterEntry:
    """An adapter the service knows under a public name."""

    name: str
    source_uri: str
    source_key: str  # what "the same source" means: a resolved folder or a registry reference
    files: AdapterFiles
    internal: str  # the backend name currently serving this public name
    state: str = LOADED
    version: str = ""
    alias: str = ""
    registry_name: str = ""
    follow_alias: bool = False
    pinned: bool = False
    load_time: float | None = None
    last_used_time: float | None = None
    request_count: int = 0
    error: str = ""


@dataclass
class AdapterLease:
    """An adapter held for one request: eviction and unloading wait until it is released."""

    handle: AdapterHandle
    name: str  # the public name, reported back to the caller
    _release: Callable[[], None] = field(repr=False, default=lambda: None)

    def release(self) -> None:
        release, self._release = self._release, lambda: None
        release()


class AdapterManager:
    """Public adapter names over a backend's resident adapters (see the module docstring for the rules)."""

    def __init__(
        self,
        backend: GenerationBackend,
        *,
        registry: AdapterRegistry | None = None,
        alias_poll_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._registry = registry
        self._poll_seconds = alias_poll_seconds
        self._clock = clock
        self._entries: dict[str, AdapterEntry] = {}
        self._in_flight: dict[str, int] = {}  # internal name -> requests using it
        self._retired: set[str] = set()  # internal names to unload once idle
        self._resident: set[str] = set()  # internal names attached to the backend
        self._lock = asyncio.Lock()
        self._names = itertools.count(1)
        self._lookups: dict[tuple[str, str | None, str | None], tuple[float, RegistryVersion]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._registry is not None and self._poller is None:
            self._poller = asyncio.create_task(self._poll_aliases(), name="lorag-generation-alias-poll")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._registry is not None:
            await self._registry.close()

    # -- queries ----------------------------------------------------------------------------------------------------

    @property
    def resident_count(self) -> int:
        return len(self._resident)

    def get(self, name: str) -> AdapterEntry | None:
        return self._entries.get(name)

    def list(self, requested_size: int, page_token: str) -> tuple[list[AdapterEntry], str]:
        """One page of entries ordered by name; the token continues after the last name of the previous page."""
        size = page_size(requested_size)
        after = decode_page_token(page_token, LIST_ADAPTERS, "") or ""
        if not isinstance(after, str):
            raise InvalidArgument.of(
                "page_token", "is not a page token this RPC issued for this request", reason="INVALID_PAGE_TOKEN"
            )
        names = sorted(n for n in self._entries if n > after)
        page = [self._entries[n] for n in names[:size]]
        next_token = encode_page_token(LIST_ADAPTERS, "", page[-1].name) if len(names) > size else ""
        return page, next_token

    # -- requests ---------------------------------------------------------------------------------------------------

    async def acquire(self, reference: str) -> AdapterLease | None:
        """The adapter a request names, held until the lease is released; None for the base model."""
        if not reference:
            return None
        ref = parse_adapter_reference(reference)
        entry = self._entries.get(ref.name) if ref.plain else None
        alias = ""
        if entry is None:
            if self._registry is None:
                raise NotFound(
                    f"adapter {reference!r} is not loaded, and no adapter registry is configured to resolve it "
                    "(set LORAG_GENERATION_TRAINING_ADDRESS)",
                    reason="ADAPTER_NOT_FOUND",
                    metadata={"adapter": reference},
                )
            found = await self._lookup(ref)
            alias = ref.alias or ""
            key = f"{ref.name}@{found.version}"
            entry = self._entries.get(key)
            if entry is None:
                async with self._lock:
                    entry = self._entries.get(key)
                    if entry is None:
                        entry = await self._load_new(
                            key, found.source_uri, f"registry:{key}", version=found.version, registry_name=ref.name
                        )
        if entry.state != LOADED:
            async with self._lock:
                if entry.state == EVICTED:
                    await self._reload(entry)
                if entry.state == FAILED:
                    raise FailedPrecondition(
                        f"adapter {entry.name!r} failed to load: {entry.error}; load it again", reason="ADAPTER_FAILED"
                    )
                if entry.name not in self._entries:
                    raise NotFound(f"adapter {reference!r} was unloaded", reason="ADAPTER_NOT_FOUND")
        internal = entry.internal
        self._in_flight[internal] = self._in_flight.get(internal, 0) + 1
        entry.request_count += 1
        entry.last_used_time = self._clock()
        public = entry.registry_name or entry.name
        return AdapterLease(
            AdapterHandle(name=internal, version=entry.version, alias=alias or entry.alias),
            public,
            lambda: self._release(internal),
        )

    def _release(self, internal: str) -> None:
        left = self._in_flight.get(internal, 0) - 1
        if left > 0:
            self._in_flight[internal] = left
            return
        self._in_flight.pop(internal, None)
        if internal in self._retired:
            self._spawn(self._unload_internal(internal))

    # -- LoadAdapter / UnloadAdapter ------------------------------------------------------------------------------

    async def load(
        self,
        name: str,
        *,
        source_uri: str | None = None,
        registry_reference: str | None = None,
        follow_alias: bool = False,
        pin: bool = False,
        replace: bool = False,
    ) -> tuple[AdapterEntry, int]:
        """Make an adapter resident under ``name``; returns the entry and the nanoseconds spent loading."""
        if (source_uri is None) == (registry_reference is None):
            raise InvalidArgument.of("source", "set exactly one of source_uri and registry_reference")
        version = alias = registry_name = ""
        if registry_reference is not None:
            ref = parse_adapter_reference(registry_reference, "registry_reference")
            if self._registry is None:
                raise NotFound(
                    f"cannot resolve {registry_reference!r}: no adapter registry is configured "
                    "(set LORAG_GENERATION_TRAINING_ADDRESS)",
                    reason="REGISTRY_NOT_CONFIGURED",
                )
            name = validate_adapter_name(name) if name else ref.name
            found = await self._lookup(ref, fresh=True)
            uri, version, alias, registry_name = found.source_uri, found.version, ref.alias or "", ref.name
            source_key = f"registry:{ref}"
            follow = follow_alias and ref.alias is not None
        else:
            if not name:
                raise InvalidArgument.of("name", "required when loading from source_uri")
            validate_adapter_name(name)
            if not source_uri:
                raise InvalidArgument.of("source_uri", "must not be empty")
            uri = source_uri
            source_key = _source_key(source_uri)
            follow = False
        started = time.perf_counter_ns()
        async with self._lock:
            existing = self._entries.get(name)
            if existing is not None and existing.source_key == source_key:
                existing.pinned = existing.pinned or pin
                if existing.state != LOADED:
                    await self._reload(existing)
                return existing, time.perf_counter_ns() - started
            if existing is not None and not replace:
                raise AlreadyExists(
                    f"adapter {name!r} already serves {existing.source_uri!r}; set replace to switch it to {uri!r}",
                    reason="ADAPTER_EXISTS",
                )
            entry = await self._load_new(
                name,
                uri,
                source_key,
                version=version,
                alias=alias,
                registry_name="",
                follow_alias=follow,
                pinned=pin,
                exclude=existing,
            )
            entry.registry_name = registry_name if registry_name and registry_name != name else ""
            if existing is not None and existing.state == LOADED:
                self._retire(existing.internal)
        return entry, time.perf_counter_ns() - started

    async def unload(self, name: str, allow_missing: bool = False) -> None:
        async with self._lock:
            entry = self._entries.pop(name, None)
            if entry is None:
                if allow_missing:
                    return
                raise NotFound(f"no adapter named {name!r} is loaded", reason="ADAPTER_NOT_FOUND")
            if entry.state == LOADED:
                self._retire(entry.internal)
            log.info("adapter unloaded", adapter=name)

    # -- internals (called with the lock held) ----------------------------------------------------------------------

    async def _lookup(self, ref: AdapterReference, fresh: bool = False) -> RegistryVersion:
        assert self._registry is not None
        key = (ref.name, ref.alias, ref.version)
        cached = self._lookups.get(key)
        now = time.monotonic()
        if cached is not None and not fresh and cached[0] > now:
            return cached[1]
        found = await self._registry.resolve(ref.name, ref.alias, ref.version)
        self._lookups[key] = (now + self._poll_seconds, found)
        return found

    async def _prepare(self, source_uri: str) -> AdapterFiles:
        folder = await asyncio.to_thread(local_folder, source_uri)
        files = await asyncio.to_thread(read_adapter_files, folder)
        info = self._backend.info()
        identities = model_identities(info)
        if not base_model_matches(files.base_model, identities):
            raise FailedPrecondition(
                f"the adapter at {source_uri!r} was trained for {files.base_model!r}, but this service serves "
                f"{info.model!r}",
                reason="BASE_MODEL_MISMATCH",
                metadata={"adapter_base_model": files.base_model, "served_model": info.model},
            )
        if info.max_lora_rank and files.rank > info.max_lora_rank:
            raise FailedPrecondition(
                f"the adapter at {source_uri!r} has rank {files.rank}, above this service's limit {info.max_lora_rank}",
                reason="ADAPTER_RANK_TOO_LARGE",
            )
        return files

    async def _attach(self, files: AdapterFiles, exclude: AdapterEntry | None = None) -> str:
        """Load ``files`` under a fresh internal name, evicting the least recently used idle adapter if full."""
        limit = self._backend.info().max_loaded_adapters
        while len(self._resident) >= max(limit, 1):
            victim = self._eviction_candidate(exclude)
            if victim is None:
                raise ResourceExhausted(
                    f"all {limit} adapter slots are in use by pinned adapters or running requests; unload one or retry",
                    reason="ADAPTER_SLOTS_FULL",
                    metadata={"max_loaded_adapters": str(limit)},
                )
            await self._unload_internal(victim.internal)
            victim.state = EVICTED
            log.info("adapter evicted", adapter=victim.name)
        internal = f"lorag_adapter_{next(self._names)}"
        await self._backend.load_adapter(internal, files)
        self._resident.add(internal)
        return internal

    def _eviction_candidate(self, exclude: AdapterEntry | None) -> AdapterEntry | None:
        candidates = [
            e
            for e in self._entries.values()
            if e.state == LOADED and not e.pinned and e is not exclude and not self._in_flight.get(e.internal)
        ]
        return min(candidates, key=lambda e: (e.last_used_time or e.load_time or 0.0, e.name), default=None)

    async def _load_new(
        self,
        name: str,
        source_uri: str,
        source_key: str,
        *,
        version: str = "",
        alias: str = "",
        registry_name: str = "",
        follow_alias: bool = False,
        pinned: bool = False,
        exclude: AdapterEntry | None = None,
    ) -> AdapterEntry:
        files = await self._prepare(source_uri)
        internal = await self._attach(files, exclude)
        entry = AdapterEntry(
            name=name,
            source_uri=source_uri,
            source_key=source_key,
            files=files,
            internal=internal,
            version=version,
            alias=alias,
            registry_name=registry_name,
            follow_alias=follow_alias,
            pinned=pinned,
            load_time=self._clock(),
        )
        self._entries[name] = entry
        log.info("adapter loaded", adapter=name, source=source_uri, version=version, rank=files.rank)
        return entry

    async def _reload(self, entry: AdapterEntry) -> None:
        entry.state = LOADING
        try:
            files = await self._prepare(entry.source_uri)
            entry.internal = await self._attach(files, entry)
        except ResourceExhausted:
            entry.state = EVICTED
            raise
        except Exception as exc:
            entry.state, entry.error = FAILED, str(exc)
            raise
        entry.files, entry.state, entry.error, entry.load_time = files, LOADED, "", self._clock()
        log.info("adapter reloaded", adapter=entry.name)

    def _retire(self, internal: str) -> None:
        """Unload ``internal`` once no request uses it (now, if none does)."""
        if self._in_flight.get(internal):
            self._retired.add(internal)
        else:
            self._spawn(self._unload_internal(internal))

    async def _unload_internal(self, internal: str) -> None:
        self._retired.discard(internal)
        if internal not in self._resident:
            return
        self._resident.discard(internal)
        try:
            await self._backend.unload_adapter(internal)
        except Exception:  # the slot is counted free either way; log for the operator
            log.exception("adapter unload failed", internal=internal)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- alias following ---------------------------------------------------------------------------------------------

    async def _poll_aliases(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            await self.check_aliases()

    async def check_aliases(self) -> None:
        """One round of alias following: switch every followed alias that moved to its new version."""
        for entry in [e for e in self._entries.values() if e.follow_alias and e.alias]:
            registry_name = entry.registry_name or entry.name
            try:
                found = await self._lookup(AdapterReference(registry_name, alias=entry.alias), fresh=True)
            except Exception as exc:  # keep serving the current version
                log.warning("alias check failed", adapter=entry.name, alias=entry.alias, error=str(exc))
                continue
            if found.version == entry.version:
                continue
            try:
                async with self._lock:
                    if self._entries.get(entry.name) is not entry:
                        continue
                    files = await self._prepare(found.source_uri)
                    internal = await self._attach(files, entry)
                    old, was_loaded = entry.internal, entry.state == LOADED
                    # The switch: requests from here on get the new version; running ones keep the old weights.
                    entry.internal, entry.files, entry.version = internal, files, found.version
                    entry.source_uri, entry.state, entry.load_time = found.source_uri, LOADED, self._clock()
                    if was_loaded:
                        self._retire(old)
                log.info("adapter alias moved", adapter=entry.name, alias=entry.alias, version=found.version)
            except Exception as exc:  # keep serving the current version
                log.warning("alias switch failed", adapter=entry.name, alias=entry.alias, error=str(exc))
