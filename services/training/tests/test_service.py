"""The real training service on port 0 (CPU-only node), called through the SDK: datasets, job creation rules,
queries and pagination. Training itself is in test_lifecycle.py."""

from __future__ import annotations

import grpc
import pytest

from lorag.training.v1 import training_service_pb2 as pb
from lorag_client import TrainingClient
from lorag_core.errors import LoragError

pytestmark = pytest.mark.service

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
async def client(training_service):
    app, _ = training_service
    async with TrainingClient(app.address) as c:
        yield c


@pytest.fixture(scope="module")
def rows(helpers):
    return lambda n: helpers.jsonl(helpers.chat_rows(n))


@pytest.fixture(scope="module")
async def dataset(client, rows):
    response = await client.upload_dataset(rows(8), name="faq", format="chat", max_length=64)
    return response.dataset


def failure(error: LoragError) -> tuple[grpc.StatusCode, str, list[str]]:
    return error.code, error.reason, [v.field for v in error.violations]


async def test_upload_stores_a_content_addressed_version_once(client, training_service, dataset, rows):
    _, runtime = training_service
    assert len(dataset.version) == 64 and dataset.row_count == 8
    assert dataset.format == pb.DATASET_FORMAT_CHAT
    assert dataset.validation_report.error_count == 0
    stats = dataset.token_statistics
    assert stats.tokenizer == MODEL and stats.max_length == 64
    assert 0 < stats.min_tokens <= stats.p50_tokens <= stats.p95_tokens <= stats.max_tokens
    assert sum(stats.histogram.counts) == 8 and len(stats.histogram.counts) == len(stats.histogram.bounds) + 1
    stored = runtime.datasets.data_path(dataset.version).read_text().splitlines()
    assert len(stored) == 8 and stored[0].startswith('{"messages":[{"content":"Answer briefly."')

    again = await client.upload_dataset(rows(8).replace(b'", "', b'","'), name="faq", format="chat", max_length=64)
    assert again.created is False and again.dataset.version == dataset.version
    assert again.dataset.create_time == dataset.create_time


async def test_upload_in_many_small_chunks_gives_the_same_version(client, dataset, rows):
    from lorag_client import training as sdk

    original = sdk.CHUNK_BYTES
    sdk.CHUNK_BYTES = 7  # rows span chunks
    try:
        response = await client.upload_dataset(rows(8), name="faq-chunked", format="chat", max_length=64)
    finally:
        sdk.CHUNK_BYTES = original
    assert response.created is True and response.dataset.version == dataset.version


async def test_invalid_rows_are_reported_not_refused(client, rows):
    data = rows(2) + b'{"messages": [{"role": "bot", "content": "x"}]}\n{oops\n'
    response = await client.upload_dataset(data, name="broken", format="chat")
    report = response.dataset.validation_report
    assert response.created is True
    assert report.error_count == 2
    assert [(i.line, i.field, i.code, i.severity) for i in report.issues] == [
        (3, "messages[0].role", "bad_role", pb.SEVERITY_ERROR),
        (4, "", "invalid_json", pb.SEVERITY_ERROR),
    ]


async def test_validate_only_measures_without_storing(client, rows):
    response = await client.upload_dataset(rows(3), name="dry-run", format="chat", validate_only=True)
    assert response.created is False and response.dataset.version == ""
    assert response.dataset.row_count == 3 and response.dataset.token_statistics.total_tokens > 0
    with pytest.raises(LoragError) as caught:
        await client.get_dataset("dry-run")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_upload_request_errors(client, training_service):
    chat = pb.DATASET_FORMAT_CHAT
    cases = [
        ([pb.UploadDatasetRequest(data=b"{}\n")], "metadata", "INVALID_ARGUMENT"),
        ([pb.UploadDatasetRequest(metadata=pb.DatasetMetadata(name="x", format=chat))], "data", "INVALID_ARGUMENT"),
        (
            [
                pb.UploadDatasetRequest(metadata=pb.DatasetMetadata(name="x", format=chat)),
                pb.UploadDatasetRequest(metadata=pb.DatasetMetadata(name="x", format=chat)),
            ],
            "metadata",
            "INVALID_ARGUMENT",
        ),
        ([pb.UploadDatasetRequest(metadata=pb.DatasetMetadata(name="x"))], "metadata.format", "INVALID_ARGUMENT"),
        (
            [pb.UploadDatasetRequest(metadata=pb.DatasetMetadata(name="bad name!", format=chat))],
            "metadata.name",
            "INVALID_NAME",
        ),
        (
            [
                pb.UploadDatasetRequest(metadata=pb.DatasetMetadata(name="x", format=chat)),
                pb.UploadDatasetRequest(data=b"x" * (1024 * 1024 + 1)),
            ],
            "data",
            "INVALID_ARGUMENT",
        ),
    ]
    for messages, field, reason in cases:

        async def stream(messages=messages):
            for message in messages:
                yield message

        with pytest.raises(LoragError) as caught:
            await client.invoke("UploadDataset", stream())
        assert failure(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, reason, [field]), field


async def test_unknown_base_model_is_not_found(client, rows):
    with pytest.raises(LoragError) as caught:
        await client.upload_dataset(rows(1), name="x", format="chat", base_model="no-such/model-xyz")
    assert failure(caught.value)[:2] == (grpc.StatusCode.NOT_FOUND, "BASE_MODEL_NOT_FOUND")


async def test_get_and_list_datasets_with_pagination(client, dataset):
    got = await client.get_dataset("faq", dataset.version[:12])
    assert got.version == dataset.version
    assert (await client.get_dataset("faq")).version == dataset.version
    names = [d.name async for d in client.iter_datasets(page_size=1)]
    assert "faq" in names and len(names) == len(set(zip(names, range(len(names)), strict=True)))
    first = await client.list_datasets(page_size=1)
    assert len(first.datasets) == 1 and first.next_page_token
    second = await client.list_datasets(page_size=1, page_token=first.next_page_token)
    assert second.datasets[0].create_time.ToNanoseconds() <= first.datasets[0].create_time.ToNanoseconds()
    with pytest.raises(LoragError) as caught:
        await client.list_datasets(name="faq", page_token=first.next_page_token)  # another query's token
    assert failure(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", ["page_token"])
    with pytest.raises(LoragError) as caught:
        await client.get_dataset("faq", "0" * 64)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


# --- job creation -----------------------------------------------------------------------------------------------


async def create(client, **kwargs):
    with pytest.raises(LoragError) as caught:
        await client.create_job(**kwargs)
    return failure(caught.value), caught.value.message


async def test_create_refuses_malformed_jobs_with_every_field(client, dataset):
    (code, _, fields), _ = await create(
        client,
        dataset_version="",
        adapter_name="bad name",
        rank=0,
        dropout=1.0,
        learning_rate=-1.0,
        eval_split_fraction=0.9,
        batch_size=0,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == [
        "training_job.dataset_version",
        "training_job.adapter_name",
        "training_job.hyperparameters.rank",
        "training_job.hyperparameters.dropout",
        "training_job.hyperparameters.learning_rate",
        "training_job.hyperparameters.batch_size",
        "training_job.hyperparameters.eval_split_fraction",
    ]
    (code, _, fields), _ = await create(client, dataset_version=dataset.version, adapter_name="a", max_length=100000)
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["training_job.hyperparameters.max_length"])


async def test_create_not_found_and_failed_preconditions(client, dataset):
    (code, reason, _), _ = await create(client, dataset_version="ab" * 32, adapter_name="a")
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "DATASET_NOT_FOUND")
    (code, reason, _), _ = await create(
        client, dataset_version=dataset.version, adapter_name="a", base_model="nobody/nothing-1b"
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "BASE_MODEL_NOT_FOUND")
    (code, reason, _), message = await create(client, dataset_version=dataset.version, adapter_name="a", method="qlora")
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "QLORA_NEEDS_GPU") and "no GPU" in message
    (code, reason, _), message = await create(client, dataset_version=dataset.version, adapter_name="a", gpu_count=1)
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_ENOUGH_GPUS") and "has 0" in message
    (code, reason, _), message = await create(
        client, dataset_version=dataset.version, adapter_name="a", batch_size=100000
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_MEMORY")
    assert "GiB" in message and "batch_size" in message


async def test_a_dataset_with_errors_cannot_be_trained(client, rows):
    broken = await client.upload_dataset(rows(2) + b'{"messages": []}\n', name="bad", format="chat")
    (code, reason, fields), _ = await create(client, dataset_version=broken.dataset.version, adapter_name="a")
    assert (code, reason, fields) == (grpc.StatusCode.FAILED_PRECONDITION, "DATASET_INVALID", ["line 3: messages"])


async def test_create_resolves_defaults_and_request_id_is_idempotent(client, dataset, training_service):
    _, runtime = training_service
    await runtime.scheduler.close()  # keep the job QUEUED: this test is about the resource, not training
    job = await client.create_job(
        dataset_version=dataset.version[:16], adapter_name="faq-adapter", request_id="req-1", max_steps=3
    )
    assert job.state == pb.TrainingJob.STATE_QUEUED and job.id.startswith("job-")
    assert job.dataset_version == dataset.version
    hp = job.hyperparameters
    assert (hp.rank, hp.alpha, hp.batch_size, hp.max_length, hp.seed, hp.max_steps) == (8, 16.0, 4, 2048, 42, 3)
    assert hp.learning_rate == pytest.approx(2e-4) and hp.dropout == pytest.approx(0.05)
    assert not hp.HasField("save_steps") and job.resources.gpu_count == 0
    assert len(job.trace_id) == 32 and int(job.trace_id, 16) != 0
    again = await client.create_job(
        dataset_version=dataset.version[:16], adapter_name="faq-adapter", request_id="req-1", max_steps=3
    )
    assert again.id == job.id
    (code, reason, _), _ = await create(
        client, dataset_version=dataset.version, adapter_name="other", request_id="req-1"
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")

    got = await client.get_job(job.id)
    assert got == job


async def test_queue_order_priorities_then_age(client, dataset, training_service):
    _, runtime = training_service  # the scheduler was stopped above, so everything stays queued
    low = await client.create_job(dataset_version=dataset.version, adapter_name="order", priority=-5)
    high = await client.create_job(dataset_version=dataset.version, adapter_name="order", priority=50)
    normal_1 = await client.create_job(dataset_version=dataset.version, adapter_name="order")
    normal_2 = await client.create_job(dataset_version=dataset.version, adapter_name="order")
    queue = [
        r.job.id for r in await runtime.jobs.in_state(pb.TrainingJob.STATE_QUEUED) if r.job.adapter_name == "order"
    ]
    assert queue == [high.id, normal_1.id, normal_2.id, low.id]

    listed = await client.list_jobs(adapter_name="order", page_size=3)
    assert [j.id for j in listed.training_jobs] == [normal_2.id, normal_1.id, high.id]  # newest first
    rest = await client.list_jobs(adapter_name="order", page_size=3, page_token=listed.next_page_token)
    assert [j.id for j in rest.training_jobs] == [low.id] and rest.next_page_token == ""


async def test_cancel_a_queued_job_and_watch_its_whole_history(client, dataset):
    job = await client.create_job(dataset_version=dataset.version, adapter_name="to-cancel")
    cancelled = await client.cancel_job(job.id)
    assert cancelled.state == pb.TrainingJob.STATE_CANCELLED and cancelled.HasField("end_time")
    assert (await client.cancel_job(job.id)).state == pb.TrainingJob.STATE_CANCELLED  # again: no change
    events = [e async for e in client.watch_job(job.id)]
    assert [e.sequence for e in events] == [1, 2]
    assert [(e.state_change.previous_state, e.state_change.state) for e in events] == [
        (pb.TrainingJob.STATE_UNSPECIFIED, pb.TrainingJob.STATE_QUEUED),
        (pb.TrainingJob.STATE_QUEUED, pb.TrainingJob.STATE_CANCELLED),
    ]
    assert [e.sequence async for e in client.watch_job(job.id, after_sequence=1)] == [2]
    assert [e async for e in client.watch_job(job.id, after_sequence=2)] == []
    with pytest.raises(LoragError) as caught:
        [e async for e in client.watch_job(job.id, after_sequence=3)]
    assert caught.value.code == grpc.StatusCode.OUT_OF_RANGE
    cancelled_only = await client.list_jobs(states=["CANCELLED"])
    assert job.id in [j.id for j in cancelled_only.training_jobs]
    assert all(j.state == pb.TrainingJob.STATE_CANCELLED for j in cancelled_only.training_jobs)


async def test_unknown_job_is_not_found_everywhere(client):
    for call in (client.get_job("job-nope"), client.cancel_job("job-nope"), client.list_checkpoints("job-nope")):
        with pytest.raises(LoragError) as caught:
            await call
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(LoragError) as caught:
        [e async for e in client.watch_job("job-nope")]
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
