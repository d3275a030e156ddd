"""Wires the dataset store, the job store and the scheduler into the lorag chassis."""

from __future__ import annotations

from lorag.training.v1 import training_service_pb2 as pb
from lorag.training.v1 import training_service_pb2_grpc as pb_grpc
from lorag_core.server import ServiceApp
from lorag_core.telemetry import get_logger
from lorag_training.config import TrainingSettings
from lorag_training.datasets.store import DatasetStore
from lorag_training.db import Database
from lorag_training.jobs import capacity
from lorag_training.jobs.scheduler import Scheduler
from lorag_training.jobs.store import JobStore
from lorag_training.service import TrainingServicer

SERVICE = pb.DESCRIPTOR.services_by_name["TrainingService"]
log = get_logger("lorag.training.server")


class TrainingRuntime:
    """What the service starts and stops around serving: the database, the scheduler and recovery."""

    def __init__(self, settings: TrainingSettings, app: ServiceApp) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.database = Database(settings.resolved_database_url)
        self.devices = capacity.detect(settings.gpu_ordinals())
        self.datasets = DatasetStore(self.database, settings.data_dir / "datasets")
        self.jobs = JobStore(self.database)
        self.scheduler = Scheduler(
            settings, self.jobs, self.datasets, self.devices, app.telemetry.tracer, app.telemetry.meter
        )
        self.servicer = TrainingServicer(
            settings, self.datasets, self.jobs, self.scheduler, self.devices, app.telemetry.tracer
        )

    async def start(self) -> None:
        """Create the schema, recover jobs, start scheduling. (The worker creates the MLflow experiment, with its
        artifacts beside a local SQLite store in <data_dir>/mlartifacts, on first use.)"""
        await self.database.run(self.database.create_schema)
        await self.scheduler.start()
        log.info(
            "training ready",
            data_dir=str(self.settings.data_dir),
            gpus=len(self.devices.gpus),
            host_memory_gib=round(self.devices.host_memory / 2**30, 1),
        )

    async def close(self) -> None:
        await self.scheduler.close()
        self.database.close()


def create_app(settings: TrainingSettings) -> tuple[ServiceApp, TrainingRuntime]:
    """The training service, not yet started: run it with ``serve(app, runtime.start, runtime.close)``."""
    app = ServiceApp("training", settings)
    runtime = TrainingRuntime(settings, app)
    app.add_service(SERVICE, pb_grpc.add_TrainingServiceServicer_to_server, runtime.servicer)
    return app, runtime
