"""Training service settings, from ``LORAG_TRAINING_*`` environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from lorag_core.config import ServiceSettings
from lorag_models import DEFAULT_CHAT_MODEL


def default_data_dir() -> Path:
    """$LORAG_HOME/training when the local stack's home is set, else ~/.local/state/lorag/training."""
    home = os.environ.get("LORAG_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".local" / "state" / "lorag") / "training"


class TrainingSettings(ServiceSettings):
    """How the training service runs; every field is ``LORAG_TRAINING_<FIELD>``.

    ``devices`` overrides GPU detection: a comma-separated list of CUDA ordinals ("0,1"), or "" / "none" for a
    CPU-only node. Unset means ``torch.cuda.device_count()`` GPUs.
    """

    model_config = SettingsConfigDict(env_prefix="LORAG_TRAINING_", extra="ignore", frozen=True)

    port: int = Field(50056, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir, description="Datasets, job folders and the databases.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the job store; sqlite:///<data_dir>/training.db."
    )
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI; sqlite:///<data_dir>/mlflow.db.")
    mlflow_registry_uri: str | None = Field(None, description="MLflow registry URI; the tracking URI when unset.")
    mlflow_experiment: str = Field("lorag-training", description="The MLflow experiment jobs log into.")
    base_model: str = Field(DEFAULT_CHAT_MODEL, description="Base model used when a dataset upload names none.")
    max_cpu_jobs: int = Field(1, ge=1, description="Jobs trained on the CPU at once on a node without GPUs.")
    devices: str | None = Field(None, description="CUDA ordinals this node may use ('0,1'); '' = CPU only; auto.")
    max_dataset_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Largest dataset upload accepted.")
    max_restarts: int = Field(3, ge=0, description="Times a crashed worker is relaunched from its checkpoint.")
    poll_seconds: float = Field(0.25, gt=0, le=10, description="How often running workers' event files are read.")
    worker_stop_seconds: float = Field(15.0, gt=0, description="How long a SIGTERMed worker may take before SIGKILL.")
    node_name: str = Field(default_factory=lambda: os.uname().nodename, description="This node's name in jobs.")

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _devices_well_formed(self) -> TrainingSettings:
        if self.devices is not None and self.devices.strip().lower() not in ("", "none", "cpu"):
            for part in self.devices.split(","):
                if not part.strip().isdigit():
                    raise ValueError(
                        "LORAG_TRAINING_DEVICES must be CUDA ordinals separated by commas, e.g. '0,1' "
                        f"(got {self.devices!r})"
                    )
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'training.db'}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def resolved_registry_uri(self) -> str:
        return self.mlflow_registry_uri or self.resolved_tracking_uri

    @property
    def artifacts_dir(self) -> Path:
        """Where a local MLflow store keeps run artifacts (the experiment's artifact location)."""
        return self.data_dir / "mlartifacts"

    def gpu_ordinals(self) -> list[int]:
        """The CUDA devices this node schedules on: the override, else every GPU torch sees."""
        if self.devices is not None:
            raw = self.devices.strip().lower()
            if raw in ("", "none", "cpu"):
                return []
            return [int(part) for part in raw.split(",")]
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
