"""Turn the worker's ``events.jsonl`` lines into persisted job events and job updates.

The worker appends one JSON object a line (see the worker contract in docs/training.md). The service reads the file
from the byte offset it has already consumed, so a line becomes exactly one JobEvent even across service restarts:
the offset is stored with the events in the same transaction. "completed" and "failed" lines are remembered as the
run's outcome; the terminal state itself is decided when the worker process exits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from lorag.common.v1 import common_pb2
from lorag.training.v1 import training_service_pb2 as pb
from lorag_core.telemetry import get_logger

log = get_logger("lorag.training.events")

_LEVELS = {"info": pb.LOG_LEVEL_INFO, "warning": pb.LOG_LEVEL_WARNING, "error": pb.LOG_LEVEL_ERROR}


@dataclass
class RunOutcome:
    """What one run of a worker reported about its end."""

    adapter: common_pb2.AdapterReference | None = None
    adapter_uri: str = ""
    error: pb.JobError | None = None
    started: bool = False
    resumed_from_step: int = 0


def read_lines(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete lines after ``offset`` (a half-written last line waits for the next read) and the new offset."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    lines: list[dict[str, Any]] = []
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("unreadable worker event line", path=str(path), line=raw[:200].decode("utf-8", "replace"))
            continue
        if isinstance(value, dict):
            lines.append(value)
    return lines, offset + end + 1


def _time(value: Any) -> Timestamp | None:
    if not isinstance(value, str) or not value:
        return None
    stamp = Timestamp()
    try:
        stamp.FromJsonString(value.replace("+00:00", "Z"))
    except ValueError:
        return None
    return stamp


def _duration(seconds: Any) -> Duration | None:
    if not isinstance(seconds, (int, float)) or seconds < 0 or seconds != seconds:
        return None
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def _num(line: dict[str, Any], key: str, default: float = 0.0) -> float:
    value = line.get(key, default)
    return float(value) if isinstance(value, (int, float)) else default


def apply_line(job: pb.TrainingJob, line: dict[str, Any], outcome: RunOutcome) -> list[pb.JobEvent]:
    """Update ``job`` from one worker line and return the events to record (in order)."""
    kind = line.get("type")
    event = pb.JobEvent()
    stamp = _time(line.get("time"))
    if stamp is not None:
        event.time.CopyFrom(stamp)
    if kind == "started":
        total = int(_num(line, "total_steps"))
        resumed = int(_num(line, "resumed_from_step"))
        outcome.started, outcome.resumed_from_step = True, resumed
        job.progress.total_steps = total
        if resumed:
            job.progress.step = max(job.progress.step, resumed)
        if line.get("mlflow_run_id"):
            job.mlflow_run_id = str(line["mlflow_run_id"])
        if line.get("base_model_revision"):
            job.base_model_revision = str(line["base_model_revision"])
        if resumed:
            text = f"training resumed from checkpoint at step {resumed} of {total} (resumed_from_step={resumed})"
            event.log.CopyFrom(pb.LogMessage(level=pb.LOG_LEVEL_WARNING, message=text))
        else:
            event.log.CopyFrom(
                pb.LogMessage(level=pb.LOG_LEVEL_INFO, message=f"training started: {total} steps (resumed_from_step=0)")
            )
        return [event]
    if kind == "step":
        metrics = pb.StepMetrics(
            step=int(_num(line, "step")),
            epoch=_num(line, "epoch"),
            loss=_num(line, "loss"),
            learning_rate=_num(line, "learning_rate"),
            grad_norm=_num(line, "grad_norm"),
            tokens_per_second=_num(line, "tokens_per_second"),
        )
        eta = _duration(line.get("eta_seconds"))
        if eta is not None:
            metrics.eta.CopyFrom(eta)
        job.latest_metrics.CopyFrom(metrics)
        job.progress.step = metrics.step
        if line.get("total_steps"):
            job.progress.total_steps = int(_num(line, "total_steps"))
        job.progress.epoch = metrics.epoch
        job.progress.tokens_per_second = metrics.tokens_per_second
        if eta is not None:
            job.progress.eta.CopyFrom(eta)
        event.step_metrics.CopyFrom(metrics)
        return [event]
    if kind == "eval":
        result = pb.EvalResult(
            step=int(_num(line, "step")),
            epoch=_num(line, "epoch"),
            eval_loss=_num(line, "eval_loss"),
            perplexity=_num(line, "perplexity"),
        )
        for name, value in (line.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                result.metrics[str(name)] = float(value)
        job.latest_eval.CopyFrom(result)
        event.eval_result.CopyFrom(result)
        return [event]
    if kind == "checkpoint":
        checkpoint = pb.Checkpoint(
            name=str(line.get("name") or f"checkpoint-{int(_num(line, 'step'))}"),
            step=int(_num(line, "step")),
            epoch=_num(line, "epoch"),
            uri=str(line.get("uri", "")),
            size_bytes=int(_num(line, "size_bytes")),
            has_optimizer_state=bool(line.get("has_optimizer_state", False)),
        )
        if stamp is not None:
            checkpoint.create_time.CopyFrom(stamp)
        event.checkpoint_saved.CopyFrom(checkpoint)
        return [event]
    if kind == "log":
        level = _LEVELS.get(str(line.get("level", "info")).lower(), pb.LOG_LEVEL_INFO)
        event.log.CopyFrom(pb.LogMessage(level=level, message=str(line.get("message", ""))))
        return [event]
    if kind == "completed":
        adapter = line.get("adapter") or {}
        outcome.adapter = common_pb2.AdapterReference(
            name=str(adapter.get("name", "")), version=str(adapter.get("version", ""))
        )
        outcome.adapter_uri = str(adapter.get("source_uri", ""))
        if line.get("mlflow_run_id"):
            job.mlflow_run_id = str(line["mlflow_run_id"])
        event.log.CopyFrom(
            pb.LogMessage(
                level=pb.LOG_LEVEL_INFO,
                message=f"adapter registered as {outcome.adapter.name} version {outcome.adapter.version}",
            )
        )
        return [event]
    if kind == "failed":
        outcome.error = pb.JobError(
            reason=str(line.get("reason") or "TRAINING_ERROR"), message=str(line.get("message", ""))
        )
        event.log.CopyFrom(
            pb.LogMessage(level=pb.LOG_LEVEL_ERROR, message=f"{outcome.error.reason}: {outcome.error.message}")
        )
        return [event]
    log.warning("unknown worker event type", type=str(kind))
    return []
