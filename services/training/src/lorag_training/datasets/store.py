"""Content-addressed dataset storage: files under ``<data_dir>/datasets/<version>/data.jsonl``, records in the DB.

The file holds the normalised rows (canonical JSON, one per line), which is exactly what the version hashes and
what the worker trains on. Several names may share a version; they share its file. A (name, version) pair is
stored once: uploading the same rows under the same name again returns the stored dataset.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, insert, select

from lorag.training.v1 import training_service_pb2 as pb
from lorag_core.errors import InvalidArgument, NotFound
from lorag_training import db as tables
from lorag_training.datasets.statistics import Statistics, load_tokenizer, summarise, token_lengths
from lorag_training.datasets.validation import WARNING, Format, Issue, ValidatedFile, validate

VERSION_PREFIX = re.compile(r"[0-9a-f]{12,64}")
"""A dataset version as callers may give it: the SHA-256 in hex, or a prefix of at least 12 digits of it."""
FORMATS: dict[pb.DatasetFormat.ValueType, Format] = {
    pb.DATASET_FORMAT_CHAT: "chat",
    pb.DATASET_FORMAT_COMPLETION: "completion",
}
FORMAT_ENUMS = {v: k for k, v in FORMATS.items()}
_SEVERITY = {"error": pb.SEVERITY_ERROR, "warning": pb.SEVERITY_WARNING}


def analyse(data: bytes, fmt: Format, base_model: str, max_length: int) -> tuple[ValidatedFile, Statistics]:
    """Validate and measure an upload (blocking: tokenizes every valid row)."""
    validated = validate(data, fmt)
    tokenizer, model_id = load_tokenizer(base_model)
    if fmt == "chat" and validated.rows and not getattr(tokenizer, "chat_template", None):
        validated.add(
            Issue(0, "", f"{model_id} has no chat template, so chat rows cannot be rendered", "no_chat_template")
        )
    lengths = token_lengths(tokenizer, [r.value for r in validated.rows], fmt)
    for row, length in zip(validated.rows, lengths, strict=False):
        if length > max_length:
            validated.add(
                Issue(
                    row.line,
                    "",
                    f"{length} tokens is longer than max_length {max_length}; training truncates it",
                    "too_long",
                    WARNING,
                )
            )
    return validated, summarise(lengths, model_id, max_length)


def to_proto(validated: ValidatedFile, stats: Statistics, name: str, description: str) -> pb.Dataset:
    issues, truncated = validated.reported_issues()
    return pb.Dataset(
        name=name,
        format=FORMAT_ENUMS[validated.format],
        row_count=validated.row_count,
        size_bytes=validated.size_bytes,
        description=description,
        token_statistics=pb.TokenStatistics(
            tokenizer=stats.tokenizer,
            total_tokens=stats.total_tokens,
            min_tokens=stats.min_tokens,
            max_tokens=stats.max_tokens,
            mean_tokens=stats.mean_tokens,
            p50_tokens=stats.p50_tokens,
            p95_tokens=stats.p95_tokens,
            max_length=stats.max_length,
            truncated_rows=stats.truncated_rows,
            histogram=pb.Histogram(bounds=list(stats.bounds), counts=stats.counts),
        ),
        validation_report=pb.ValidationReport(
            issues=[
                pb.ValidationIssue(
                    line=i.line, field=i.field, message=i.message, code=i.code, severity=_SEVERITY[i.severity]
                )
                for i in issues
            ],
            error_count=validated.error_count,
            warning_count=validated.warning_count,
            truncated=truncated,
        ),
    )


class DatasetStore:
    """Dataset records in the database and their files on disk."""

    def __init__(self, database: tables.Database, root: Path) -> None:
        self.db = database
        self.root = root

    def data_path(self, version: str) -> Path:
        return self.root / version / "data.jsonl"

    def _write_file(self, version: str, lines: list[str]) -> None:
        target = self.data_path(version)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(dir=target.parent, prefix=".data-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                for line in lines:
                    handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, target)  # a reader never sees a half-written file
        finally:
            if os.path.exists(staging):
                os.unlink(staging)

    def _save(self, dataset: pb.Dataset, validated: ValidatedFile) -> tuple[pb.Dataset, bool]:
        with self.db.engine.begin() as conn:
            row = conn.execute(
                select(tables.datasets.c.proto).where(
                    tables.datasets.c.name == dataset.name, tables.datasets.c.version == dataset.version
                )
            ).first()
            if row is not None:
                return pb.Dataset.FromString(row.proto), False
            self._write_file(dataset.version, validated.normalised)
            now = time.time()
            stored = pb.Dataset()
            stored.CopyFrom(dataset)
            stored.create_time.CopyFrom(_timestamp(now))
            conn.execute(
                insert(tables.datasets).values(
                    name=stored.name,
                    version=stored.version,
                    error_count=stored.validation_report.error_count,
                    create_time=now,
                    proto=stored.SerializeToString(),
                )
            )
            return stored, True

    async def save(self, dataset: pb.Dataset, validated: ValidatedFile) -> tuple[pb.Dataset, bool]:
        """Store the rows and the record; an existing (name, version) is returned as it is, with False."""
        return await self.db.run(self._save, dataset, validated)

    def _get(self, name: str, version: str) -> pb.Dataset:
        query = select(tables.datasets.c.proto, tables.datasets.c.version)
        if name:
            query = query.where(tables.datasets.c.name == name)
        if version:
            query = query.where(tables.datasets.c.version.startswith(version))
        with self.db.engine.connect() as conn:
            rows = conn.execute(query.order_by(tables.datasets.c.row_id.desc())).all()
        if not rows:
            what = f"dataset {name!r}" if name else "dataset"
            raise NotFound(
                message=f"no {what} has version {version!r}" if version else f"no {what} exists",
                reason="DATASET_NOT_FOUND",
                metadata={"name": name, "version": version},
            )
        if len({r.version for r in rows}) > 1 and version:
            raise InvalidArgument.of("version", f"prefix {version!r} matches several versions; give more digits")
        return pb.Dataset.FromString(rows[0].proto)

    async def get(self, name: str, version: str = "", field: str = "version") -> pb.Dataset:
        """A dataset by name and version (full or a prefix of at least 12 hex digits); the latest when no version.

        With no name, the version alone is looked up across names (they all share the same rows).
        """
        version = version.strip().lower()
        if version and not VERSION_PREFIX.fullmatch(version):
            raise InvalidArgument.of(field, "must be the SHA-256 version, or a prefix of at least 12 hex digits")
        if not name and not version:
            raise InvalidArgument.of(field, "is required")
        return await self.db.run(self._get, name, version)

    def _list_page(self, name: str, size: int, offset: int) -> tuple[list[pb.Dataset], bool]:
        query = select(tables.datasets.c.proto)
        if name:
            query = query.where(tables.datasets.c.name == name)
        query = query.order_by(tables.datasets.c.row_id.desc()).offset(offset).limit(size + 1)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [pb.Dataset.FromString(r.proto) for r in rows[:size]], len(rows) > size

    async def list_page(self, name: str, size: int, offset: int) -> tuple[list[pb.Dataset], bool]:
        """One page, newest first, and whether more follow."""
        return await self.db.run(self._list_page, name, size, offset)

    def _count(self) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tables.datasets)).scalar_one())

    async def count(self) -> int:
        return await self.db.run(self._count)


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
