"""The adapter registry: PEFT adapter folders as versions of MLflow registered models, with aliases and lineage.

Every method is blocking (MLflow's client is synchronous); the service calls them through `asyncio.to_thread`.
Each AdapterRegistry holds its own `MlflowClient` with explicit tracking and registry URIs, so nothing leaks into
MLflow's process-wide state (two registries on two stores can live in one process, as in tests).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from lorag_core.errors import FieldViolation, InvalidArgument, LoragError, NotFound, Unavailable
from lorag_core.names import ADAPTER, check_alias
from lorag_core.pagination import decode_page_token, encode_page_token, page_size

T = TypeVar("T")

LINEAGE_KEYS_TAG = "lorag.lineage_keys"
"""A version tag listing which of its tags are lineage (the rest are returned as plain tags)."""

LIST_KIND = "ListAdapterVersions"
"""The RPC whose page tokens wrap MLflow's own (so a token of another listing is refused, not followed)."""


@dataclass
class AdapterVersionRecord:
    """One registered adapter version, in the shape of the AdapterVersion message."""

    name: str
    version: str
    aliases: list[str]
    source_uri: str
    lineage: dict[str, str]
    description: str
    tags: dict[str, str] = field(default_factory=dict)
    create_time: datetime = field(default_factory=lambda: datetime.now(UTC))


def local_path(uri: str) -> str:
    """A file:// URI (or a bare path) as a local path; any other URI unchanged."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] == ":\\"):  # a path (or a Windows drive)
        return str(Path(uri))
    return uri


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go for a local SQLite store: beside the database, not in the working
    directory (MLflow's default `./mlruns` would follow whatever folder the process started in)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(unquote(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])).resolve()
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", experiment) or "default"
        return str(db.parent / "mlartifacts" / safe)
    return None


class AdapterRegistry:
    """Register, resolve and alias adapter versions in an MLflow model registry."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The MlflowClient, created on first use (`import mlflow` alone takes seconds)."""
        with self._lock:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = _call(
                    lambda: MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri), "connect"
                )
            return self._client

    # -- writes -------------------------------------------------------------------------------------------------

    def register(
        self, name: str, source_dir: str, run_id: str, lineage: dict[str, str], description: str = ""
    ) -> AdapterVersionRecord:
        """Log `source_dir` as the run's "adapter" artifact and register it as the next version of `name`."""
        ADAPTER.check(name, "name")
        folder = Path(source_dir)
        if not folder.is_dir() or not any(folder.iterdir()):
            raise InvalidArgument.of("source_dir", f"{source_dir} is not a folder with files")
        if not run_id:
            raise InvalidArgument.of("run_id", "must not be empty")
        client = self.client
        run = _call(lambda: client.get_run(run_id), "run", run_id)
        _call(lambda: client.log_artifacts(run_id, str(folder), "adapter"), "log artifacts")
        self._ensure_registered_model(name)
        tags = {str(k): str(v) for k, v in lineage.items()}
        tags.setdefault("mlflow_run_id", run_id)
        tags[LINEAGE_KEYS_TAG] = ",".join(sorted(k for k in tags if k != LINEAGE_KEYS_TAG))
        source = run.info.artifact_uri.rstrip("/") + "/adapter"
        mv = _call(
            lambda: client.create_model_version(name, source=source, run_id=run_id, tags=tags, description=description),
            "create version",
        )
        return self._record(mv)

    def _ensure_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise _translate(exc, "registered model", name) from exc
        except Exception as exc:
            if not _is_mlflow_failure(exc):
                raise
            raise _translate(exc, "registered model", name) from exc

    def set_alias(self, name: str, alias: str, version: str) -> AdapterVersionRecord:
        """Point `alias` at `version`, moving it from any other version."""
        check_alias(alias)
        version = _version(version)
        self.get(name, version=version)  # NOT_FOUND for an unknown adapter or version
        client = self.client
        _call(lambda: client.set_registered_model_alias(name, alias, version), "set alias", name)
        return self.get(name, version=version)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove `alias`; the version it pointed at stays."""
        if not alias:
            raise InvalidArgument.of("alias", "must not be empty")
        model = self._registered_model(name)
        if alias not in (model.aliases or {}):
            raise NotFound(
                f"adapter {name!r} has no alias {alias!r}", reason="ALIAS_NOT_FOUND", metadata={"name": name}
            )
        client = self.client
        _call(lambda: client.delete_registered_model_alias(name, alias), "delete alias", name)

    # -- reads --------------------------------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None, alias: str | None = None) -> AdapterVersionRecord:
        """One version: by number, by alias, or the latest when neither is given."""
        if not name:
            raise InvalidArgument.of("name", "must not be empty")
        if version and alias:
            raise InvalidArgument.of("alias", "give a version or an alias, not both")
        client = self.client
        if version:
            version = _version(version)
            return self._record(_call(lambda: client.get_model_version(name, version), "version", f"{name}@{version}"))
        model = self._registered_model(name)
        if alias:
            aliases = model.aliases or {}
            if alias not in aliases:
                raise NotFound(
                    f"adapter {name!r} has no alias {alias!r}", reason="ALIAS_NOT_FOUND", metadata={"name": name}
                )
            return self._record(_call(lambda: client.get_model_version(name, str(aliases[alias])), "version", name))
        found = _call(
            lambda: client.search_model_versions(
                f"name='{_quote(name)}'", max_results=1, order_by=["version_number DESC"]
            ),
            "versions",
            name,
        )
        if not found:
            raise NotFound(f"adapter {name!r} has no versions", reason="ADAPTER_NOT_FOUND", metadata={"name": name})
        return self._record(found[0])

    def list_versions(
        self, name: str | None, size: int = 0, page_token: str = ""
    ) -> tuple[list[AdapterVersionRecord], str]:
        """One page of versions ordered by name, then version newest first; returns (records, next_page_token).

        ``size`` 0 means the default page size. The token wraps MLflow's own, scoped to ``name``."""
        size = page_size(size)
        scope = name or ""
        mlflow_token = decode_page_token(page_token, LIST_KIND, scope)
        client = self.client
        if name:
            self._registered_model(name)  # NOT_FOUND rather than an empty page
            query = f"name='{_quote(name)}'"
        else:
            query = ""
        page = _call(
            lambda: client.search_model_versions(
                query,
                max_results=size,
                order_by=["name ASC", "version_number DESC"],
                page_token=str(mlflow_token) if mlflow_token else None,
            ),
            "list versions",
            field_path="page_token",
        )
        # search_model_versions leaves aliases empty: read each model's alias table once and fill them in.
        alias_tables: dict[str, dict[str, str]] = {}
        for mv in page:
            if mv.name not in alias_tables:
                aliases = self._registered_model(mv.name).aliases or {}
                alias_tables[mv.name] = {alias: str(version) for alias, version in aliases.items()}
        records = [
            self._record(mv, [a for a, v in alias_tables[mv.name].items() if v == str(mv.version)]) for mv in page
        ]
        following = page.token.decode() if isinstance(page.token, bytes) else page.token  # the SQL store's are bytes
        return records, encode_page_token(LIST_KIND, scope, following) if following else ""

    # -- helpers ------------------------------------------------------------------------------------------------

    def _registered_model(self, name: str) -> Any:
        client = self.client
        return _call(lambda: client.get_registered_model(name), "adapter", name)

    def _record(self, mv: Any, aliases: list[str] | None = None) -> AdapterVersionRecord:
        tags = dict(mv.tags or {})
        keys = [k for k in tags.pop(LINEAGE_KEYS_TAG, "").split(",") if k]
        lineage = {k: tags.pop(k) for k in keys if k in tags}
        if mv.run_id:
            lineage.setdefault("mlflow_run_id", mv.run_id)
        aliases = list(mv.aliases or []) if aliases is None else aliases
        return AdapterVersionRecord(
            name=mv.name,
            version=str(mv.version),
            aliases=sorted(aliases),
            source_uri=local_path(mv.source or ""),
            lineage=lineage,
            description=mv.description or "",
            tags=tags,
            create_time=datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC),
        )


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _version(version: str) -> str:
    text = str(version).strip()
    if text[:1] in ("v", "V") and text[1:].isdigit():
        text = text[1:]
    if not text.isdigit() or int(text) < 1:
        raise InvalidArgument.of("version", f"{version!r} is not a version number")
    return str(int(text))


def _call(fn: Callable[[], T], what: str, subject: str = "", field_path: str = "") -> T:
    """Run one MLflow call, turning its failures into lorag errors (NOT_FOUND / INVALID_ARGUMENT / UNAVAILABLE)."""
    try:
        return fn()
    except LoragError:
        raise
    except Exception as exc:
        if not _is_mlflow_failure(exc):
            raise
        raise _translate(exc, what, subject, field_path) from exc


def _is_mlflow_failure(exc: Exception) -> bool:
    """MLflow's own errors, and connection/database errors from the libraries under it; anything else is a bug."""
    from mlflow.exceptions import MlflowException

    module = type(exc).__module__.split(".", 1)[0]
    return isinstance(exc, MlflowException | OSError | ConnectionError) or module in (
        "requests",
        "urllib3",
        "sqlalchemy",
    )


def _translate(exc: Exception, what: str, subject: str = "", field_path: str = "") -> LoragError:
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        code = exc.error_code
        if code == "RESOURCE_DOES_NOT_EXIST":
            return NotFound(
                f"{what} {subject!r} not found" if subject else str(exc.message), metadata={"name": subject}
            )
        if code == "INVALID_PARAMETER_VALUE" and "page token" in str(exc.message).lower():
            return InvalidArgument.of(
                field_path or "page_token", "is not a token this service issued", reason="INVALID_PAGE_TOKEN"
            )
        if code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST"):
            return InvalidArgument(
                message=str(exc.message), violations=[FieldViolation(field_path or what, str(exc.message))]
            )
        if code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED", "ENDPOINT_NOT_FOUND") or (
            "API request" in str(exc.message) and "failed" in str(exc.message)
        ):
            return Unavailable(f"MLflow at the tracking server is unreachable ({what}): {exc.message}")
    return Unavailable(f"MLflow call failed ({what}): {exc}", reason="MLFLOW_UNAVAILABLE")
