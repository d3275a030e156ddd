"""The proto edge of the training service: request fields checked and converted, registry records as messages.

A CreateTrainingJob request is resolved in :mod:`lorag_training.jobs.validation` (it needs the dataset store and
the node's devices); everything the handlers check or convert without a lookup is here. Names follow
:mod:`lorag_core.names`, pages :mod:`lorag_core.pagination`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.json_format import ParseDict

from lorag.training.v1 import training_service_pb2 as pb
from lorag_core.errors import InvalidArgument
from lorag_core.names import DATASET, check_alias
from lorag_core.pagination import decode_offset, encode_page_token, page_size
from lorag_training.datasets.store import FORMATS

if TYPE_CHECKING:
    from lorag_training.registry import AdapterVersionRecord

MAX_REQUEST_ID = 256
MAX_DATASET_MAX_LENGTH = 1 << 20
_METHOD_ENUMS = {"lora": pb.TRAINING_METHOD_LORA, "qlora": pb.TRAINING_METHOD_QLORA, "dora": pb.TRAINING_METHOD_DORA}


def required(value: str, field: str) -> str:
    """``value`` without surrounding blanks; INVALID_ARGUMENT on ``field`` when nothing is left."""
    value = value.strip()
    if not value:
        raise InvalidArgument.of(field, "is required")
    return value


def check_dataset_metadata(metadata: pb.DatasetMetadata) -> None:
    """The first message of an upload: a valid dataset name, a known format, a max_length in range."""
    DATASET.check(metadata.name, "metadata.name")
    if metadata.format not in FORMATS:
        raise InvalidArgument.of("metadata.format", "must be DATASET_FORMAT_CHAT or DATASET_FORMAT_COMPLETION")
    if metadata.HasField("max_length") and not 1 <= metadata.max_length <= MAX_DATASET_MAX_LENGTH:
        raise InvalidArgument.of("metadata.max_length", f"must be from 1 to {MAX_DATASET_MAX_LENGTH}")


def request_id(value: str) -> str:
    """A CreateTrainingJob idempotency key: blanks trimmed, at most 256 characters ("" means none)."""
    value = value.strip()
    if len(value) > MAX_REQUEST_ID:
        raise InvalidArgument.of("request_id", f"must be at most {MAX_REQUEST_ID} characters")
    return value


def job_states(states: Iterable[int]) -> list[int]:
    """A ListTrainingJobs state filter, sorted and without repeats; an unknown state is INVALID_ARGUMENT."""
    values = list(states)
    for index, state in enumerate(values):
        if state not in pb.TrainingJob.State.values() or state == pb.TrainingJob.STATE_UNSPECIFIED:
            raise InvalidArgument.of(f"states[{index}]", f"unknown state {state}")
    return sorted(set(values))


class _PagedRequest(Protocol):
    @property
    def page_size(self) -> int: ...
    @property
    def page_token(self) -> str: ...


@dataclass(frozen=True)
class OffsetPage:
    """One page of an offset-paged listing: ``kind`` is the RPC, ``scope`` what the listing is filtered to."""

    kind: str
    scope: str
    size: int
    offset: int

    @classmethod
    def of(cls, request: _PagedRequest, kind: str, scope: str) -> OffsetPage:
        size = page_size(request.page_size)
        return cls(kind, scope, size, decode_offset(request.page_token, kind, scope))

    def next_token(self, more: bool) -> str:
        """The token of the page after this one, or "" when this is the last."""
        return encode_page_token(self.kind, self.scope, self.offset + self.size) if more else ""


def adapter_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``name``, ``name@version`` or ``name@alias`` as (name, version, alias); "name@latest" is the newest."""
    name, _, selector = required(reference, "reference").partition("@")
    name, selector = name.strip(), selector.strip()
    if not name:
        raise InvalidArgument.of("reference", 'must be "name", "name@alias" or "name@version"')
    version = selector if selector.isdigit() else None
    alias = selector if selector and not selector.isdigit() and selector.lower() != "latest" else None
    return name, version, alias


def alias(value: str, field: str = "alias") -> str:
    """A registry alias to set: the chassis' alias rule (``latest``, digits and v+digits name versions)."""
    return check_alias(value.strip(), field)


def version_number(value: str, field: str = "version") -> str:
    """A registry version as its decimal number."""
    value = required(value, field)
    if not value.isdigit():
        raise InvalidArgument.of(field, "must be a decimal version number")
    return value


def adapter_version(record: AdapterVersionRecord) -> pb.AdapterVersion:
    """A registry record as the API's AdapterVersion: lineage tags become typed lineage, eval tags its metrics."""
    tags = dict(record.lineage or {})
    lineage = pb.AdapterLineage(
        dataset_name=tags.get("dataset_name", ""),
        dataset_version=tags.get("dataset_version", ""),
        base_model=tags.get("base_model", ""),
        base_model_revision=tags.get("base_model_revision", ""),
        job_id=tags.get("job_id", ""),
        mlflow_run_id=tags.get("mlflow_run_id", ""),
        method=_METHOD_ENUMS.get(tags.get("method", "").lower(), pb.TRAINING_METHOD_UNSPECIFIED),
    )
    _parse_hyperparameters(tags.get("hyperparameters"), lineage.hyperparameters)
    for key, value in tags.items():
        if key.startswith("eval_") or key == "perplexity":
            number = _float(value)
            if number is not None and math.isfinite(number):
                lineage.eval_metrics[key] = number
    version = pb.AdapterVersion(
        name=record.name,
        version=str(record.version),
        aliases=list(record.aliases or []),
        source_uri=record.source_uri or "",
        lineage=lineage,
        description=record.description or "",
        tags={str(k): str(v) for k, v in (record.tags or {}).items()},
    )
    version.create_time.FromDatetime(record.create_time)
    return version


def _parse_hyperparameters(raw: str | None, into: pb.Hyperparameters) -> None:
    """The job's hyperparameters as registered (JSON); a tag that does not parse is skipped, not an error."""
    if not raw:
        return
    try:
        ParseDict(json.loads(raw), into, ignore_unknown_fields=True)
    except (ValueError, TypeError, AttributeError):
        pass


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
