"""Real training on the CPU through the real worker (SmolLM2-135M, 8 rows, a few steps of max_length 64):
the lifecycle and its events, checkpoints, the registered adapter and its aliases, cancellation, the CLI, and
a crash followed by a service restart that resumes from the checkpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from lorag.training.v1 import training_service_pb2 as pb
from lorag_client import TrainingClient
from lorag_core.errors import LoragError

State = pb.TrainingJob.State
TINY = {"max_length": 64, "batch_size": 2, "logging_steps": 1, "eval_split_fraction": 0.25, "rank": 4}
LORAG = str(Path(sys.executable).parent / "lorag")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("training-lifecycle")


@pytest.fixture(scope="module")
async def service(helpers, data_dir):
    """A mutable holder: the restart test replaces the service with a new one on the same data dir."""
    app, runtime = await helpers.start_service(helpers.settings_for(data_dir))
    holder = {"app": app, "runtime": runtime}
    yield holder
    await helpers.stop_service(holder["app"], holder["runtime"])


@pytest.fixture(scope="module")
async def client(service):
    async with TrainingClient(service["app"].address) as c:
        yield c


@pytest.fixture(scope="module")
async def dataset(client, helpers):
    response = await client.upload_dataset(
        helpers.jsonl(helpers.chat_rows(8)), name="faq", format="chat", max_length=64
    )
    assert response.dataset.validation_report.error_count == 0
    return response.dataset


async def watch_all(client, job_id, after=0, deadline=300.0):
    async def collect():
        return [e async for e in client.watch_job(job_id, after_sequence=after)]

    return await asyncio.wait_for(collect(), deadline)


async def wait_until(predicate, deadline=180.0, every=0.2):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(every)
    raise AssertionError("condition not reached before the deadline")


def states(events):
    return [(e.state_change.previous_state, e.state_change.state) for e in events if e.HasField("state_change")]


@pytest.fixture(scope="module")
async def finished(client, dataset):
    """One tiny job trained to the end, with a checkpoint every step."""
    job = await client.create_job(
        dataset_version=dataset.version, adapter_name="faq-lora", max_steps=3, save_steps=1, **TINY
    )
    events = await watch_all(client, job.id)
    return await client.get_job(job.id), events


@pytest.mark.service
async def test_a_job_trains_to_success_with_numbered_events(finished, client):
    job, events = finished
    assert job.state == State.STATE_SUCCEEDED, job.error
    assert states(events) == [
        (State.STATE_UNSPECIFIED, State.STATE_QUEUED),
        (State.STATE_QUEUED, State.STATE_RUNNING),
        (State.STATE_RUNNING, State.STATE_SUCCEEDED),
    ]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state_change.result_adapter == job.result_adapter
    steps = [e.step_metrics for e in events if e.HasField("step_metrics")]
    assert [s.step for s in steps] == [1, 2, 3] and all(s.loss > 0 for s in steps)
    assert job.progress.step == job.progress.total_steps == 3
    assert job.latest_metrics.step == 3 and job.start_time.ToNanoseconds() <= job.end_time.ToNanoseconds()
    assert job.resources.assigned_devices == ["cpu"] and job.mlflow_run_id
    assert job.result_adapter.name == "faq-lora" and job.result_adapter.version == "1"

    resumed = await watch_all(client, job.id, after=4)
    assert resumed == events[4:]


@pytest.mark.service
async def test_checkpoints_are_listed_oldest_first(finished, client):
    job, events = finished
    listed = await client.list_checkpoints(job.id)
    assert [c.step for c in listed.checkpoints] == [1, 2, 3]
    assert all(c.has_optimizer_state and c.size_bytes > 0 and Path(c.uri).is_dir() for c in listed.checkpoints)
    assert [e.checkpoint_saved for e in events if e.HasField("checkpoint_saved")] == list(listed.checkpoints)
    page = await client.list_checkpoints(job.id, page_size=2)
    rest = await client.list_checkpoints(job.id, page_size=2, page_token=page.next_page_token)
    assert [c.step for c in [*page.checkpoints, *rest.checkpoints]] == [1, 2, 3] and rest.next_page_token == ""


@pytest.mark.service
async def test_the_adapter_is_registered_with_lineage_and_aliases(finished, client, dataset):
    job, _ = finished
    version = await client.get_adapter_version("faq-lora")
    assert (version.name, version.version) == ("faq-lora", "1")
    assert version.lineage.job_id == job.id and version.lineage.dataset_version == dataset.version
    assert version.lineage.method == pb.TRAINING_METHOD_LORA
    assert (Path(version.source_uri) / "adapter_config.json").exists()
    moved = await client.set_alias("faq-lora", "production", "1")
    assert "production" in moved.aliases
    assert (await client.get_adapter_version("faq-lora@production")).version == "1"
    assert (await client.get_adapter_version("faq-lora@1")).version == "1"
    listed = await client.list_adapter_versions("faq-lora")
    assert [(v.name, v.version) for v in listed.adapter_versions] == [("faq-lora", "1")]
    await client.delete_alias("faq-lora", "production")
    for call, code in [
        (client.get_adapter_version("faq-lora@production"), grpc.StatusCode.NOT_FOUND),
        (client.set_alias("faq-lora", "latest", "1"), grpc.StatusCode.INVALID_ARGUMENT),
        (client.set_alias("faq-lora", "123", "1"), grpc.StatusCode.INVALID_ARGUMENT),
        (client.set_alias("faq-lora", "prod", "9"), grpc.StatusCode.NOT_FOUND),
        (client.list_adapter_versions("nobody"), grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(LoragError) as caught:
            await call
        assert caught.value.code == code


@pytest.mark.service
async def test_cancel_running_then_finished(finished, client, dataset):
    done, _ = finished
    with pytest.raises(LoragError) as caught:
        await client.cancel_job(done.id)
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION and "SUCCEEDED" in caught.value.message

    job = await client.create_job(dataset_version=dataset.version, adapter_name="to-cancel", max_steps=500, **TINY)

    async def first_step():
        return any(e.HasField("step_metrics") for e in await watch_all_now(client, job.id))

    await wait_until(first_step)
    response = await client.cancel_job(job.id)
    assert response.state in (State.STATE_RUNNING, State.STATE_CANCELLED)
    events = await watch_all(client, job.id, deadline=60)
    final = await client.get_job(job.id)
    assert final.state == State.STATE_CANCELLED and states(events)[-1] == (State.STATE_RUNNING, State.STATE_CANCELLED)
    assert final.progress.step < 500


async def watch_all_now(client, job_id):
    """The events recorded so far (the watch is cut after a moment, as a client polling would)."""
    events = []
    try:
        async with asyncio.timeout(0.5):
            async for event in client.watch_job(job_id):
                events.append(event)
    except TimeoutError:
        pass
    return events


@pytest.mark.e2e
async def test_cli_train_wait_with_progress_and_with_json(service, dataset, tmp_path):
    file = tmp_path / "faq-cli.jsonl"
    file.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"prompt": "2+2=", "completion": "4"},
                {"prompt": "Capital of France:", "completion": " Paris"},
                {"prompt": "Colour of the sky:", "completion": " blue"},
                {"prompt": "3+3=", "completion": "6"},
            ]
        )
    )
    env = {**os.environ, "LORAG_TRAINING_ADDRESS": service["app"].address}
    command = [
        LORAG,
        "train",
        "--dataset",
        str(file),
        "--name",
        "cli-adapter",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--max-length",
        "64",
        "--rank",
        "4",
        "--wait",
    ]
    # Without --json: the live progress bar renders (on stderr) from before the total is known to the end.
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "succeeded" in result.stderr and "SUCCEEDED" in result.stdout

    listed = await asyncio.to_thread(
        subprocess.run,
        [LORAG, "jobs", "list", "--state", "succeeded", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert listed.returncode == 0, listed.stderr
    (job,) = [j for j in json.loads(listed.stdout)["training_jobs"] if j["adapter_name"] == "cli-adapter"]
    assert job["state"] == "SUCCEEDED" and job["result_adapter"]["name"] == "cli-adapter"
    assert job["hyperparameters"]["max_steps"] == "2"
    got = await asyncio.to_thread(
        subprocess.run, [LORAG, "jobs", "get", job["id"], "--json"], capture_output=True, text=True, timeout=60, env=env
    )
    assert got.returncode == 0 and json.loads(got.stdout)["state"] == "SUCCEEDED"

    # With --json: the final job, its state included, is what is printed.
    command = [*command[:5], "cli-adapter-json", command[6], "1", *command[8:], "--json"]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout)
    assert printed["state"] == "SUCCEEDED" and printed["result_adapter"]["name"] == "cli-adapter-json"
    aliased = await asyncio.to_thread(
        subprocess.run,
        [LORAG, "adapters", "alias", "cli-adapter@staging", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert aliased.returncode == 0 and json.loads(aliased.stdout)["aliases"] == ["staging"]


@pytest.mark.service
async def test_a_killed_worker_and_a_restarted_service_resume_from_the_checkpoint(
    service, client, dataset, helpers, data_dir
):
    job = await client.create_job(
        dataset_version=dataset.version, adapter_name="resumed", max_steps=6, save_steps=1, **TINY
    )

    async def checkpointed():
        return any(e.HasField("checkpoint_saved") for e in await watch_all_now(client, job.id))

    await wait_until(checkpointed)
    record = await service["runtime"].jobs.get(job.id)
    os.killpg(record.worker_pid, signal.SIGKILL)  # the worker dies as if the OOM killer took it

    async def restarted():
        return (await client.get_job(job.id)).restart_count == 1

    await wait_until(restarted, deadline=30)
    await helpers.stop_service(service["app"], service["runtime"])  # then the service goes down too

    app, runtime = await helpers.start_service(helpers.settings_for(data_dir))
    service.update(app=app, runtime=runtime)
    async with TrainingClient(app.address) as fresh:
        events = await watch_all(fresh, job.id)
        final = await fresh.get_job(job.id)
    assert final.state == State.STATE_SUCCEEDED, final.error
    assert final.restart_count == 1
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    resumed = [e.log.message for e in events if e.HasField("log") and "resumed_from_step=" in e.log.message]
    assert any("resumed_from_step=0" not in m for m in resumed), resumed
    started = [
        json.loads(line)
        for line in (data_dir / "jobs" / job.id / "events.jsonl").read_text().splitlines()
        if json.loads(line)["type"] == "started"
    ]
    assert started[0]["resumed_from_step"] == 0 and started[-1]["resumed_from_step"] > 0
    assert [s[1] for s in states(events)].count(State.STATE_RUNNING) >= 2
