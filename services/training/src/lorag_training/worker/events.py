"""The worker's side of the event contract: one JSON object a line in `<output_dir>/events.jsonl`.

The service tails this file (and re-reads it after a restart), so each line is written whole, flushed and
fsynced before the next step: a line the service has seen is never lost or half-written.
"""

from __future__ import annotations

import json
import math
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def rfc3339_now() -> str:
    """UTC time as RFC 3339 with milliseconds and a Z suffix."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(value: Any) -> Any:
    # JSON has no NaN/Infinity; a diverged loss is reported as null rather than breaking the reader.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


class EventWriter:
    """Appends events; a no-op on ranks other than 0 (enabled=False) so only one process writes."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._lock = threading.Lock()
        self._fh = None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the job's life

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type_, "time": rfc3339_now(), **_finite(fields)}
        if self._fh is None:
            return event
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        return event

    def log(self, level: str, message: str) -> None:
        self.emit("log", level=level, message=message)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_events(path: Path) -> list[dict[str, Any]]:
    """All complete events of a file (a trailing partial line, from a crash mid-write, is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
