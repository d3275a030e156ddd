"""The job spec the scheduler writes to `<job_dir>/spec.json`: loaded and checked before anything heavy starts.

The scheduler has already resolved every default, so a missing or out-of-range value here is a bug upstream (or
a hand-written spec) and is reported as INVALID_SPEC rather than silently replaced.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("lora", "qlora", "dora")
FORMATS = ("chat", "completion")


class WorkerError(Exception):
    """A failure with a stable reason the worker reports in its "failed" event (UPPER_SNAKE)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class SpecError(WorkerError):
    def __init__(self, message: str) -> None:
        super().__init__("INVALID_SPEC", message)


@dataclass(frozen=True)
class Hyperparameters:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ()
    epochs: float = 1.0
    max_steps: int = 0
    learning_rate: float = 2e-4
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_length: int = 2048
    seed: int = 42
    eval_split_fraction: float = 0.1
    warmup_ratio: float = 0.03
    eval_steps: int = 0
    save_steps: int = 0
    logging_steps: int = 10

    def as_params(self) -> dict[str, str]:
        """Flat string form for MLflow params."""
        out = {k: str(v) for k, v in self.__dict__.items() if k != "target_modules"}
        out["target_modules"] = ",".join(self.target_modules) or "all-linear"
        return out


@dataclass(frozen=True)
class MlflowSpec:
    tracking_uri: str
    registry_uri: str
    experiment: str


@dataclass(frozen=True)
class WorkerSpec:
    job_id: str
    base_model: str
    dataset_path: str
    dataset_version: str
    dataset_format: str
    method: str
    hyperparameters: Hyperparameters
    adapter_name: str
    output_dir: Path
    mlflow: MlflowSpec
    devices: tuple[str, ...] = ()
    display_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def events_path(self) -> Path:
        return self.output_dir / "events.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.output_dir / "adapter"


def _req(obj: dict[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in obj:
        raise SpecError(f"{where}{key}: missing")
    value = obj[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise SpecError(f"{where}{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _hyperparameters(raw: dict[str, Any]) -> Hyperparameters:
    w = "hyperparameters."
    targets = _req(raw, "target_modules", list, w)
    if not all(isinstance(t, str) and t for t in targets):
        raise SpecError(f"{w}target_modules: must be non-empty strings")
    hp = Hyperparameters(
        rank=_req(raw, "rank", int, w),
        alpha=_req(raw, "alpha", float, w),
        dropout=_req(raw, "dropout", float, w),
        target_modules=tuple(targets),
        epochs=_req(raw, "epochs", float, w),
        max_steps=_req(raw, "max_steps", int, w),
        learning_rate=_req(raw, "learning_rate", float, w),
        batch_size=_req(raw, "batch_size", int, w),
        gradient_accumulation_steps=_req(raw, "gradient_accumulation_steps", int, w),
        max_length=_req(raw, "max_length", int, w),
        seed=_req(raw, "seed", int, w),
        eval_split_fraction=_req(raw, "eval_split_fraction", float, w),
        warmup_ratio=_req(raw, "warmup_ratio", float, w),
        eval_steps=_req(raw, "eval_steps", int, w),
        save_steps=_req(raw, "save_steps", int, w),
        logging_steps=_req(raw, "logging_steps", int, w),
    )
    checks = [
        ("rank", 1 <= hp.rank <= 256),
        ("alpha", hp.alpha > 0 and math.isfinite(hp.alpha)),
        ("dropout", 0 <= hp.dropout < 1),
        ("epochs", hp.epochs > 0 or hp.max_steps > 0),
        ("max_steps", hp.max_steps >= 0),
        ("learning_rate", hp.learning_rate > 0 and math.isfinite(hp.learning_rate)),
        ("batch_size", hp.batch_size >= 1),
        ("gradient_accumulation_steps", hp.gradient_accumulation_steps >= 1),
        ("max_length", hp.max_length >= 8),
        ("eval_split_fraction", 0 <= hp.eval_split_fraction <= 0.5),
        ("warmup_ratio", 0 <= hp.warmup_ratio <= 0.5),
        ("eval_steps", hp.eval_steps >= 0),
        ("save_steps", hp.save_steps >= 0),
        ("logging_steps", hp.logging_steps >= 1),
    ]
    for name, ok in checks:
        if not ok:
            raise SpecError(f"{w}{name}: out of range ({getattr(hp, name)!r})")
    return hp


def parse_spec(raw: dict[str, Any]) -> WorkerSpec:
    """Validate a decoded spec.json into a WorkerSpec; SpecError names the first bad field."""
    if not isinstance(raw, dict):
        raise SpecError("spec: expected a JSON object")
    method = _req(raw, "method", str)
    if method not in METHODS:
        raise SpecError(f"method: must be one of {', '.join(METHODS)}, got {method!r}")
    fmt = _req(raw, "dataset_format", str)
    if fmt not in FORMATS:
        raise SpecError(f"dataset_format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    ml = _req(raw, "mlflow", dict)
    devices = raw.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise SpecError("devices: expected a list of strings")
    known = {
        "job_id",
        "base_model",
        "dataset_path",
        "dataset_version",
        "dataset_format",
        "method",
        "hyperparameters",
        "adapter_name",
        "output_dir",
        "mlflow",
        "devices",
        "display_name",
    }
    spec = WorkerSpec(
        job_id=_req(raw, "job_id", str),
        base_model=_req(raw, "base_model", str),
        dataset_path=_req(raw, "dataset_path", str),
        dataset_version=_req(raw, "dataset_version", str),
        dataset_format=fmt,
        method=method,
        hyperparameters=_hyperparameters(_req(raw, "hyperparameters", dict)),
        adapter_name=_req(raw, "adapter_name", str),
        output_dir=Path(_req(raw, "output_dir", str)),
        mlflow=MlflowSpec(
            tracking_uri=_req(ml, "tracking_uri", str, "mlflow."),
            registry_uri=str(ml.get("registry_uri") or ml["tracking_uri"]),
            experiment=_req(ml, "experiment", str, "mlflow."),
        ),
        devices=tuple(devices),
        display_name=str(raw.get("display_name", "")),
        extra={k: v for k, v in raw.items() if k not in known},
    )
    for name in ("job_id", "adapter_name", "dataset_path", "output_dir"):
        if not str(getattr(spec, name)):
            raise SpecError(f"{name}: must not be empty")
    if not spec.mlflow.experiment:
        raise SpecError("mlflow.experiment: must not be empty")
    return spec


def load_spec(path: str | Path) -> WorkerSpec:
    """Read and validate spec.json."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"spec file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"spec file {path} is unreadable: {exc}") from exc
    return parse_spec(raw)
