"""Check a CreateTrainingJob request and resolve every default, before anything is queued.

Order matters for the codes a caller sees: malformed fields first (INVALID_ARGUMENT, all of them at once), then
what the names point at (NOT_FOUND), then whether this node can serve the job (FAILED_PRECONDITION).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import uuid
from pathlib import Path

from lorag.training.v1 import training_service_pb2 as pb
from lorag_core.errors import FailedPrecondition, FieldViolation, InvalidArgument
from lorag_core.names import ADAPTER
from lorag_models import resolve_model
from lorag_training.datasets.statistics import has_chat_template, load_tokenizer
from lorag_training.datasets.store import VERSION_PREFIX, DatasetStore
from lorag_training.jobs import capacity
from lorag_training.jobs.capacity import NodeDevices
from lorag_training.worker.spec import Hyperparameters

PREFIX = "training_job."
MAX_VIOLATIONS = 100


# The proto's documented defaults live in one place: the worker's spec, which every job's spec.json fills in full.
DEFAULTS = Hyperparameters()


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def _check_hyperparameters(hp: pb.Hyperparameters, problems: list[FieldViolation]) -> None:
    path = PREFIX + "hyperparameters."

    def bad(name: str, why: str) -> None:
        problems.append(FieldViolation(path + name, why))

    checks = [
        ("rank", lambda v: 1 <= v <= 256, "must be from 1 to 256"),
        ("alpha", lambda v: _finite(v) and v > 0, "must be above 0"),
        ("dropout", lambda v: _finite(v) and 0 <= v < 1, "must be from 0 to 1 (exclusive)"),
        ("epochs", lambda v: _finite(v) and v > 0, "must be above 0"),
        ("max_steps", lambda v: v >= 1, "must be at least 1"),
        ("learning_rate", lambda v: _finite(v) and v > 0, "must be above 0"),
        ("batch_size", lambda v: v >= 1, "must be at least 1"),
        ("gradient_accumulation_steps", lambda v: v >= 1, "must be at least 1"),
        ("max_length", lambda v: v >= 1, "must be at least 1"),
        ("eval_split_fraction", lambda v: _finite(v) and 0 <= v <= 0.5, "must be from 0 to 0.5"),
        ("warmup_ratio", lambda v: _finite(v) and 0 <= v <= 0.5, "must be from 0 to 0.5"),
        ("eval_steps", lambda v: v >= 1, "must be at least 1"),
        ("save_steps", lambda v: v >= 1, "must be at least 1"),
        ("logging_steps", lambda v: v >= 1, "must be at least 1"),
    ]
    present = {descriptor.name for descriptor, _ in hp.ListFields()}
    for name, ok, why in checks:
        if name in present and not ok(getattr(hp, name)):
            bad(name, f"{why} (got {getattr(hp, name)})")
    for index, module in enumerate(hp.target_modules):
        if not re.fullmatch(r"[A-Za-z0-9_.*-]+", module):
            bad(f"target_modules[{index}]", f"{module!r} is not a module name")


def _fill_defaults(hp: pb.Hyperparameters) -> None:
    for name in (
        "rank",
        "dropout",
        "epochs",
        "learning_rate",
        "batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "seed",
        "eval_split_fraction",
        "warmup_ratio",
        "logging_steps",
    ):
        if not hp.HasField(name):
            setattr(hp, name, getattr(DEFAULTS, name))
    if not hp.HasField("alpha"):
        hp.alpha = 2.0 * hp.rank


def copy_configuration(given: pb.TrainingJob) -> pb.TrainingJob:
    """Only the fields a caller sets; output-only fields are ignored."""
    job = pb.TrainingJob(
        display_name=given.display_name,
        base_model=given.base_model.strip(),
        base_model_revision=given.base_model_revision,
        dataset_version=given.dataset_version.strip().lower(),
        method=given.method or pb.TRAINING_METHOD_LORA,
        priority=given.priority,
        adapter_name=given.adapter_name.strip(),
    )
    job.hyperparameters.CopyFrom(given.hyperparameters)
    if given.resources.HasField("gpu_count"):
        job.resources.gpu_count = given.resources.gpu_count
    return job


async def resolve_job(given: pb.TrainingJob, datasets: DatasetStore, devices: NodeDevices) -> pb.TrainingJob:
    """A complete QUEUED job from the request's configuration, or the error that says why not."""
    job = copy_configuration(given)
    problems: list[FieldViolation] = []
    if not job.base_model:
        problems.append(FieldViolation(PREFIX + "base_model", "is required"))
    if not job.dataset_version:
        problems.append(FieldViolation(PREFIX + "dataset_version", "is required"))
    elif not VERSION_PREFIX.fullmatch(job.dataset_version):
        problems.append(
            FieldViolation(
                PREFIX + "dataset_version",
                "must be the dataset's SHA-256 version or a prefix of at least 12 hex digits",
            )
        )
    if not job.adapter_name:
        problems.append(FieldViolation(PREFIX + "adapter_name", "is required"))
    elif bad_name := ADAPTER.violation(job.adapter_name, PREFIX + "adapter_name"):
        problems.append(bad_name)
    if len(job.display_name) > 256:
        problems.append(FieldViolation(PREFIX + "display_name", "must be at most 256 characters"))
    if not -100 <= job.priority <= 100:
        problems.append(FieldViolation(PREFIX + "priority", f"must be from -100 to 100 (got {job.priority})"))
    if job.method not in pb.TrainingMethod.values():
        problems.append(FieldViolation(PREFIX + "method", f"unknown method {job.method}"))
    if job.resources.HasField("gpu_count") and job.resources.gpu_count < 0:
        problems.append(FieldViolation(PREFIX + "resources.gpu_count", "must be at least 0"))
    _check_hyperparameters(job.hyperparameters, problems)
    if problems:
        raise InvalidArgument(
            message="invalid training job: " + "; ".join(f"{p.field}: {p.description}" for p in problems),
            violations=problems[:MAX_VIOLATIONS],
        )

    dataset = await datasets.get("", job.dataset_version, field=PREFIX + "dataset_version")
    job.dataset_version = dataset.version
    report = dataset.validation_report
    if report.error_count:
        first = [i for i in report.issues if i.severity == pb.SEVERITY_ERROR][:MAX_VIOLATIONS]
        more = report.error_count - len(first)
        raise FailedPrecondition(
            message=(
                f"dataset {dataset.name} ({dataset.version[:12]}) has {report.error_count} validation errors; "
                "fix the rows and upload it again" + (f" ({more} more not listed)" if more > 0 else "")
            ),
            reason="DATASET_INVALID",
            metadata={"error_count": str(report.error_count)},
            violations=[
                FieldViolation(f"line {i.line}: {i.field}" if i.field else f"line {i.line}", i.message) for i in first
            ],
        )

    tokenizer, model_id = await asyncio.to_thread(load_tokenizer, job.base_model)  # NOT_FOUND when unresolvable
    resolved = resolve_model(job.base_model)
    if dataset.format == pb.DATASET_FORMAT_CHAT and not has_chat_template(tokenizer):
        raise FailedPrecondition(
            message=f"{model_id} has no chat template, so it cannot train on chat dataset "
            f"{dataset.name}; use a completion dataset or an instruct model",
            reason="NO_CHAT_TEMPLATE",
        )

    hp = job.hyperparameters
    _fill_defaults(hp)
    shape = capacity.model_shape(resolved.path)
    context = _context_length(resolved.path)
    if context and hp.max_length > context:
        raise InvalidArgument.of(
            PREFIX + "hyperparameters.max_length", f"{hp.max_length} exceeds {model_id}'s context of {context} tokens"
        )

    method = {pb.TRAINING_METHOD_QLORA: "qlora", pb.TRAINING_METHOD_DORA: "dora"}.get(job.method, "lora")
    if not job.resources.HasField("gpu_count"):
        job.resources.gpu_count = 1 if devices.has_gpu else 0
    gpu_count = job.resources.gpu_count
    if gpu_count > len(devices.gpus):
        raise FailedPrecondition(
            message=f"the job asks for {gpu_count} GPUs but this node has {len(devices.gpus)}",
            reason="NOT_ENOUGH_GPUS",
            metadata={"requested": str(gpu_count), "available": str(len(devices.gpus))},
        )
    if method == "qlora" and gpu_count == 0:
        why = "this node has no GPU" if not devices.has_gpu else "the job asks for no GPU (resources.gpu_count 0)"
        raise FailedPrecondition(
            message=f"QLoRA quantises the base model with bitsandbytes on a CUDA GPU, and {why}",
            reason="QLORA_NEEDS_GPU",
        )
    if shape is not None:
        sequence = min(hp.max_length, max(dataset.token_statistics.max_tokens, 1))
        estimated = capacity.estimate(
            shape, method, hp.rank, list(hp.target_modules), hp.batch_size, sequence, on_gpu=gpu_count > 0
        )
        capacity.check_fits(estimated, devices, gpu_count)

    job.id = f"job-{uuid.uuid4().hex[:16]}"
    job.state = pb.TrainingJob.STATE_QUEUED
    if not job.display_name:
        job.display_name = f"{job.adapter_name} on {dataset.name}"
    return job


def _context_length(model_path: str) -> int:
    config = Path(model_path) / "config.json"
    if not config.exists():
        return 0
    data = json.loads(config.read_text())
    return int(data.get("max_position_embeddings", 0) or 0)
