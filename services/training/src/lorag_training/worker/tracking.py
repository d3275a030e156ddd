"""The job's MLflow run: params once, metrics per logged step (off the training thread), the dataset as an input.

The run id is persisted in `<output_dir>/mlflow_run_id` so a worker restarted from a checkpoint logs into the same
run. The client gets explicit tracking and registry URIs; MLflow's process-wide "active run" is never used.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from lorag_training.registry import default_artifact_location
from lorag_training.worker.spec import WorkerError, WorkerSpec

log = structlog.get_logger("lorag.training.worker")

RUN_ID_FILE = "mlflow_run_id"


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """The experiment's id, creating it (artifacts beside a local SQLite store) when missing."""
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_location(tracking_uri, name))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another job created it meanwhile
            raise
        return client.get_experiment_by_name(name).experiment_id


class RunTracker:
    """One MLflow run per job; a no-op on ranks other than 0."""

    def __init__(self, spec: WorkerSpec, enabled: bool = True) -> None:
        self.spec = spec
        self.enabled = enabled
        self.run_id = ""
        self.client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._warned = False

    @property
    def run_id_path(self) -> Path:
        return self.spec.output_dir / RUN_ID_FILE

    def start(self, base_model_revision: str, dataset_digest: str, resolved_model_id: str) -> str:
        """Create or reopen the run; params, tags and the dataset input are written only when it is new."""
        if not self.enabled:
            return ""
        try:
            return self._start(base_model_revision, dataset_digest, resolved_model_id)
        except WorkerError:
            raise
        except Exception as exc:
            raise WorkerError(
                "MLFLOW_UNAVAILABLE", f"cannot open the MLflow run at {self.spec.mlflow.tracking_uri}: {exc}"
            ) from exc

    def _start(self, base_model_revision: str, dataset_digest: str, resolved_model_id: str) -> str:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        spec = self.spec
        self.client = MlflowClient(tracking_uri=spec.mlflow.tracking_uri, registry_uri=spec.mlflow.registry_uri)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-log")
        if self.run_id_path.exists():
            previous = self.run_id_path.read_text(encoding="utf-8").strip()
            try:
                self.client.get_run(previous)
                self.client.update_run(previous, status="RUNNING")
                self.run_id = previous
                return previous
            except MlflowException:
                log.warning("mlflow_run_missing", run_id=previous)
        experiment_id = ensure_experiment(self.client, spec.mlflow.experiment, spec.mlflow.tracking_uri)
        tags = {
            "lorag.job_id": spec.job_id,
            "lorag.adapter_name": spec.adapter_name,
            "dataset_version": spec.dataset_version,
            "dataset_digest": dataset_digest,
            "base_model": spec.base_model,
            "base_model_revision": base_model_revision,
            "method": spec.method,
        }
        run = self.client.create_run(experiment_id, run_name=spec.display_name or spec.job_id, tags=tags)
        self.run_id = run.info.run_id
        tmp = self.run_id_path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(self.run_id)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.run_id_path)
        from mlflow.entities import Param

        params = {
            **self.spec.hyperparameters.as_params(),
            "method": spec.method,
            "base_model": spec.base_model,
            "base_model_id": resolved_model_id,
            "base_model_revision": base_model_revision,
            "dataset_version": spec.dataset_version,
            "dataset_format": spec.dataset_format,
            "adapter_name": spec.adapter_name,
            "job_id": spec.job_id,
            "devices": ",".join(spec.devices) or "cpu",
        }
        self.client.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        self._log_dataset_input(dataset_digest)
        return self.run_id

    def _log_dataset_input(self, dataset_digest: str) -> None:
        """The dataset as an MLflow input (shown on the run page); the tags above carry the same lineage."""
        try:
            from mlflow.data.dataset_source_registry import resolve_dataset_source
            from mlflow.data.meta_dataset import MetaDataset
            from mlflow.entities import DatasetInput, InputTag

            name = str(self.spec.extra.get("dataset_name") or Path(self.spec.dataset_path).stem)
            source = resolve_dataset_source(self.spec.dataset_path)
            dataset = MetaDataset(source, name=name, digest=dataset_digest[:32])  # type: ignore[abstract]  # mlflow stubs
            self.client.log_inputs(
                self.run_id,
                datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "train")])],
            )
        except Exception as exc:
            log.warning("mlflow_dataset_input_failed", error=str(exc))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Queue one log_batch on the logging thread, so a slow tracking server never stalls training."""
        if not self.enabled or self._pool is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None and v == v]
        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._pool.submit(self._send, batch))

    def _send(self, batch: list[Any]) -> None:
        try:
            self.client.log_batch(self.run_id, metrics=batch)
        except Exception as exc:
            if not self._warned:
                self._warned = True
                log.warning("mlflow_log_failed", error=str(exc))

    def flush(self) -> None:
        for f in self._pending:
            f.result()
        self._pending = []

    def finish(self, status: str) -> None:
        """Mark the run FINISHED / FAILED / KILLED (best effort: the job's own outcome is already decided)."""
        if not self.enabled or self.client is None:
            return
        try:
            self.flush()
            self.client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            log.warning("mlflow_finish_failed", error=str(exc))
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
