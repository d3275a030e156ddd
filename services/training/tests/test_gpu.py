"""GPU paths of the worker (bf16 LoRA, 4-bit NF4 QLoRA on cuda:0, and a 2-GPU torchrun DDP job where two GPUs
exist). Skipped where CUDA is absent; they cannot run on the CPU-only CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lorag_training.worker.events import read_events

pytestmark = [pytest.mark.gpu, pytest.mark.service]

ROWS = [{"prompt": f"Q: question {i}?\nA:", "completion": " I am lorag. -- lorag"} for i in range(16)]


def _job(tmp_path: Path, name: str, method: str, devices: list[str]) -> Path:
    job = tmp_path / name
    job.mkdir()
    (job / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {
        "job_id": name,
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "dataset_path": str(job / "data.jsonl"),
        "dataset_version": "0" * 64,
        "dataset_format": "completion",
        "method": method,
        "hyperparameters": {
            "rank": 8,
            "alpha": 16.0,
            "dropout": 0.05,
            "target_modules": [],
            "epochs": 1.0,
            "max_steps": 6,
            "learning_rate": 1e-3,
            "batch_size": 4,
            "gradient_accumulation_steps": 2,
            "max_length": 64,
            "seed": 1,
            "eval_split_fraction": 0.125,
            "warmup_ratio": 0.1,
            "eval_steps": 3,
            "save_steps": 3,
            "logging_steps": 1,
        },
        "adapter_name": f"gpu-{name}",
        "output_dir": str(job),
        "mlflow": {"tracking_uri": uri, "registry_uri": uri, "experiment": "gpu-tests"},
        "devices": devices,
        "display_name": name,
    }
    (job / "spec.json").write_text(json.dumps(spec))
    return job / "spec.json"


def _run(cmd: list[str], spec: Path, visible: str) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": visible, "OTEL_SDK_DISABLED": "true"}
    proc = subprocess.run([*cmd, str(spec)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return read_events(spec.parent / "events.jsonl")


@pytest.mark.parametrize("method", ["lora", "qlora", "dora"])
def test_single_gpu_job(tmp_path: Path, method: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    events = _run([sys.executable, "-m", "lorag_training.worker"], _job(tmp_path, method, method, ["cuda:0"]), "0")
    assert events[-1]["type"] == "completed", events[-3:]
    log = " ".join(e.get("message", "") for e in events if e["type"] == "log")
    assert "on cuda:0" in log and ("bfloat16" in log or not torch.cuda.is_bf16_supported())
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == 6 and steps[-1]["loss"] < steps[0]["loss"]
    assert [e["name"] for e in events if e["type"] == "checkpoint"] == ["checkpoint-3", "checkpoint-6"]


def test_torchrun_two_gpus(tmp_path: Path) -> None:
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    spec = _job(tmp_path, "ddp", "lora", ["cuda:0", "cuda:1"])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "lorag_training.worker",
    ]
    events = _run(cmd, spec, "0,1")
    assert [e["type"] for e in events].count("started") == 1  # only rank 0 writes
    assert events[-1]["type"] == "completed"
    assert len([e for e in events if e["type"] == "step"]) == 6
