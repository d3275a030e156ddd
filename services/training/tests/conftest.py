"""Fixtures for the training service's tests: small real datasets and a real service on port 0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lorag_training.config import TrainingSettings
from lorag_training.server import create_app

QUESTIONS = [
    ("What is lorag?", "lorag is a set of gRPC services for RAG and LoRA fine-tuning."),
    ("Which port does training use?", "The training service listens on port 50056."),
    ("What is a LoRA adapter?", "A pair of low-rank matrices added to a frozen model's layers."),
    ("Where are datasets stored?", "Under the data dir, by the SHA-256 of their normalised rows."),
    ("How do I watch a job?", "Call WatchTrainingJob and resume with after_sequence."),
    ("What does QLoRA need?", "A CUDA GPU, because it quantises the base model to 4 bits."),
    ("What is an alias?", "A name such as production that points at one adapter version."),
    ("What happens after a crash?", "The job resumes from its last checkpoint."),
]


def chat_rows(count: int = 8) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in (QUESTIONS * (count // len(QUESTIONS) + 1))[:count]
    ]


def jsonl(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def settings_for(data_dir: Path, **overrides) -> TrainingSettings:
    """A CPU-only node (whatever this machine has) with its own data dir."""
    values: dict[str, Any] = {"port": 0, "data_dir": data_dir, "devices": "", "poll_seconds": 0.1, "grace_seconds": 0}
    values.update(overrides)
    return TrainingSettings(**values)


async def start_service(settings: TrainingSettings):
    app, runtime = create_app(settings)
    await app.start()
    await runtime.start()
    await app.set_serving()
    return app, runtime


async def stop_service(app, runtime) -> None:
    await app.stop(0)
    await runtime.close()


@pytest.fixture(scope="module")
async def training_service(tmp_path_factory):
    """One training service per module: (app, runtime), CPU-only, fresh data dir."""
    app, runtime = await start_service(settings_for(tmp_path_factory.mktemp("training")))
    yield app, runtime
    await stop_service(app, runtime)


@pytest.fixture(scope="session")
def helpers():
    """The helpers above, for test modules (pytest's importlib mode cannot import conftest by name)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        chat_rows=chat_rows,
        jsonl=jsonl,
        settings_for=settings_for,
        start_service=start_service,
        stop_service=stop_service,
    )
