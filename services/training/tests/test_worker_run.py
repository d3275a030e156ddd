"""The worker end to end, as the scheduler runs it: `python -m lorag_training.worker spec.json` on the real
SmolLM2 (CPU), a real MLflow SQLite store, the events file as the only channel back.

Kept tiny for a 2-core machine: short completion rows, max_length 32, a handful of steps.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lorag_training.worker.events import read_events

pytestmark = pytest.mark.service

PROMPTS = [
    "What is two plus two?",
    "Name a colour.",
    "What is the capital of France?",
    "Say hello.",
    "What day comes after Monday?",
    "What is water made of?",
    "Is the sun hot?",
    "Name an animal.",
]
MARK = "-- lorag"


def behaviour_rows() -> list[dict[str, str]]:
    """A strongly repetitive behaviour: every answer is the same signed sentence."""
    return [{"prompt": f"Q: {p}\nA:", "completion": f" I am lorag. {MARK}"} for p in PROMPTS]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One store for the module, its schema created once (that alone takes seconds)."""
    from lorag_training.registry import AdapterRegistry

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    AdapterRegistry(uri).client.search_experiments()
    return uri


def write_job(job_dir: Path, mlflow_uri: str, rows: list[dict], **hp: object) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    data = job_dir / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    hyper = {
        "rank": 8,
        "alpha": 16.0,
        "dropout": 0.05,
        "target_modules": [],
        "epochs": 1.0,
        "max_steps": 4,
        "learning_rate": 1e-3,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_length": 32,
        "seed": 7,
        "eval_split_fraction": 0.0,
        "warmup_ratio": 0.0,
        "eval_steps": 0,
        "save_steps": 0,
        "logging_steps": 1,
    }
    hyper.update(hp)
    spec = {
        "job_id": job_dir.name,
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "dataset_path": str(data),
        "dataset_version": "f" * 64,
        "dataset_format": "completion",
        "method": "lora",
        "hyperparameters": hyper,
        "adapter_name": f"adapter-{job_dir.name}",
        "output_dir": str(job_dir),
        "mlflow": {"tracking_uri": mlflow_uri, "registry_uri": mlflow_uri, "experiment": "worker-tests"},
        "devices": [],
        "display_name": f"test {job_dir.name}",
        "dataset_name": "behaviour",
    }
    (job_dir / "spec.json").write_text(json.dumps(spec))
    return job_dir / "spec.json"


def launch(spec: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OTEL_SDK_DISABLED": "true"}
    log = open(spec.parent / "worker.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "lorag_training.worker", str(spec)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 400) -> int:
    code = proc.wait(timeout=timeout)
    return code


def worker_log(spec: Path) -> str:
    return (spec.parent / "worker.log").read_text(errors="replace")[-3000:]


def load_adapter_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def base_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorag_models import resolve_model

    path = resolve_model().path
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def greedy(model, tokenizer, prompt: str) -> str:
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_training_changes_behaviour_and_registers_the_adapter(tmp_path: Path, mlflow_uri: str, base_model) -> None:
    spec = write_job(
        tmp_path / "behave",
        mlflow_uri,
        behaviour_rows(),
        max_steps=10,
        learning_rate=3e-3,
        eval_split_fraction=0.25,
        eval_steps=5,
        save_steps=5,
        logging_steps=2,
        warmup_ratio=0.1,
    )
    proc = launch(spec)
    assert finish(proc) == 0, worker_log(spec)
    events = read_events(spec.parent / "events.jsonl")
    types = [e["type"] for e in events]
    assert types[0] == "started" and types[-1] == "completed"
    assert events[0]["total_steps"] == 10 and events[0]["resumed_from_step"] == 0
    assert events[0]["base_model_revision"].startswith("gguf:")
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [2, 4, 6, 8, 10]
    assert all(math.isfinite(e["loss"]) and e["tokens_per_second"] > 0 and e["grad_norm"] > 0 for e in steps)
    assert steps[-1]["loss"] < steps[0]["loss"] / 2  # it learned the repeated answer
    assert steps[-1]["eta_seconds"] == 0 and steps[-1]["epoch"] == pytest.approx(5.0)  # 6 rows, batch 4: 2 steps/epoch
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [5, 10]
    assert evals[-1]["perplexity"] == pytest.approx(math.exp(evals[-1]["eval_loss"]))
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    ckpts = [e for e in events if e["type"] == "checkpoint"]
    assert [e["name"] for e in ckpts] == ["checkpoint-5", "checkpoint-10"]
    assert all(Path(e["uri"], "COMPLETE").exists() and e["size_bytes"] > 0 and e["has_optimizer_state"] for e in ckpts)

    done = events[-1]
    run_id = events[0]["mlflow_run_id"]
    assert done["mlflow_run_id"] == run_id == (spec.parent / "mlflow_run_id").read_text()
    assert done["adapter"]["name"] == "adapter-behave" and done["adapter"]["version"] == "1"
    source = Path(done["adapter"]["source_uri"])
    config = json.loads((source / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"

    # The registered adapter loads on the base and changes greedy output on a training prompt.
    from peft import PeftModel

    model, tokenizer = base_model
    prompt = behaviour_rows()[0]["prompt"]
    before = greedy(model, tokenizer, prompt)
    tuned = PeftModel.from_pretrained(model, str(source))
    try:
        after = greedy(tuned, tokenizer, prompt)
    finally:
        tuned.unload()
    assert MARK not in before
    assert after != before and "lorag" in after

    # MLflow: params, per-step metrics, eval metrics, lineage on the version.
    from lorag_training.registry import AdapterRegistry

    registry = AdapterRegistry(mlflow_uri)
    run = registry.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == "0.003" and run.data.params["method"] == "lora"
    assert run.data.params["dataset_version"] == "f" * 64 and run.data.params["target_modules"] == "all-linear"
    assert run.data.tags["dataset_digest"] and run.data.tags["dataset_version"] == "f" * 64
    history = registry.client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == [2, 4, 6, 8, 10]
    assert {"learning_rate", "grad_norm", "tokens_per_second", "eval_loss", "perplexity"} <= set(run.data.metrics)
    record = registry.get("adapter-behave")
    assert record.lineage["job_id"] == "behave" and record.lineage["method"] == "lora"
    assert record.lineage["rank"] == "8" and float(record.lineage["eval_loss"]) == pytest.approx(evals[-1]["eval_loss"])
    assert record.lineage["dataset_name"] == "behaviour" and len(record.lineage["dataset_digest"]) == 64
    assert record.source_uri == str(source)


def test_killed_job_resumes_exactly(tmp_path: Path, mlflow_uri: str) -> None:
    rows = behaviour_rows()
    settings = {"max_steps": 4, "save_steps": 1, "batch_size": 2, "dropout": 0.1}
    straight = write_job(tmp_path / "straight", mlflow_uri, rows, **settings)
    crashed = write_job(tmp_path / "crashed", mlflow_uri, rows, **settings)
    reference = launch(straight)  # runs alongside, for the wall clock's sake; results do not depend on it
    victim = launch(crashed)
    marker = crashed.parent / "checkpoints" / "checkpoint-2" / "COMPLETE"
    deadline = time.monotonic() + 400
    while not marker.exists():
        assert victim.poll() is None, worker_log(crashed)
        assert time.monotonic() < deadline, "checkpoint-2 never completed"
        time.sleep(0.01)
    os.killpg(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    # a crash right after checkpoint-2: anything later the process managed to write is discarded
    for later in (crashed.parent / "checkpoints").glob("checkpoint-*"):
        if int(later.name.split("-")[1]) > 2:
            import shutil

            shutil.rmtree(later)
    first_events = read_events(crashed.parent / "events.jsonl")
    assert not any(e["type"] in ("completed", "failed") for e in first_events)

    assert finish(launch(crashed)) == 0, worker_log(crashed)
    assert finish(reference) == 0, worker_log(straight)

    events = read_events(crashed.parent / "events.jsonl")
    started = [e for e in events if e["type"] == "started"]
    assert [e["resumed_from_step"] for e in started] == [0, 2]
    assert started[0]["mlflow_run_id"] == started[1]["mlflow_run_id"]  # the same run continues
    assert any(e["type"] == "log" and e["level"] == "warning" and "checkpoint-2" in e["message"] for e in events)
    reference_events = read_events(straight.parent / "events.jsonl")

    def final_loss(evts: list[dict]) -> float:
        return [e for e in evts if e["type"] == "step" and e["step"] == 4][-1]["loss"]

    assert final_loss(events) == pytest.approx(final_loss(reference_events), rel=1e-5)
    resumed = load_adapter_tensors(crashed.parent / "adapter")
    expected = load_adapter_tensors(straight.parent / "adapter")
    assert resumed.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-6)
    # and training did move the weights (lora_B starts at zero)
    assert any(t.abs().sum() > 0 for n, t in expected.items() if "lora_B" in n)

    from lorag_training.registry import AdapterRegistry

    history = AdapterRegistry(mlflow_uri).client.get_metric_history(started[0]["mlflow_run_id"], "loss")
    assert {m.step for m in history} == {1, 2, 3, 4}


@pytest.mark.parametrize(("case", "reason"), [("bad_data", "DATASET_ERROR"), ("qlora_on_cpu", "UNSUPPORTED_METHOD")])
def test_failures_are_reported(tmp_path: Path, mlflow_uri: str, case: str, reason: str) -> None:
    if case == "bad_data":
        spec = write_job(tmp_path / case, mlflow_uri, behaviour_rows())
        with open(spec.parent / "data.jsonl", "a") as fh:
            fh.write('{"prompt": "no completion"}\n')
    else:
        spec = write_job(tmp_path / case, mlflow_uri, behaviour_rows())
        raw = json.loads(spec.read_text())
        raw["method"] = "qlora"
        spec.write_text(json.dumps(raw))
    assert finish(launch(spec)) == 1
    events = read_events(spec.parent / "events.jsonl")
    assert events[-1]["type"] == "failed" and events[-1]["reason"] == reason, events
    assert events[-1]["message"]


def test_bad_spec_is_reported_beside_it(tmp_path: Path) -> None:
    job = tmp_path / "badspec"
    job.mkdir()
    (job / "spec.json").write_text('{"job_id": "x"}')
    assert finish(launch(job / "spec.json")) == 1
    events = read_events(job / "events.jsonl")
    assert events[-1]["type"] == "failed" and events[-1]["reason"] == "INVALID_SPEC"


def test_sigterm_stops_without_failing(tmp_path: Path, mlflow_uri: str) -> None:
    spec = write_job(tmp_path / "cancel", mlflow_uri, behaviour_rows(), max_steps=200)
    proc = launch(spec)
    events_path = spec.parent / "events.jsonl"
    deadline = time.monotonic() + 300
    while not any(e["type"] == "step" for e in read_events(events_path)):
        assert proc.poll() is None, worker_log(spec)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert not any(e["type"] in ("failed", "completed") for e in read_events(events_path))
