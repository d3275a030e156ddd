"""Service tier: the real generation service on port 0 with the real SmolLM2-135M-Instruct, called over gRPC.

Most tests share the session's ``generation_service`` (root conftest); the capacity tests (one decode slot, no
queue, one adapter slot) run against a second server of their own. Token counts stay small: the model runs on CPU.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lorag.common.v1 import common_pb2
from lorag.generation.v1 import generation_service_pb2 as pb
from lorag_client import GenerationClient
from lorag_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    LoragError,
    NotFound,
    ResourceExhausted,
)
from lorag_generation.config import GenerationSettings
from lorag_generation.server import create_app

pytestmark = pytest.mark.service
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def reasons(error: LoragError) -> tuple[str, list[str]]:
    """The ErrorInfo reason and the BadRequest field paths of a failed call."""
    return error.reason, [v.field for v in error.violations]


@pytest.fixture(scope="module")
async def client(generation_service: str):
    async with GenerationClient(generation_service, timeout=600) as c:
        yield c


@pytest.fixture(scope="module")
async def base_answer(client: GenerationClient) -> pb.GenerateResponse:
    return await client.generate(messages=QUESTION, temperature=0, max_new_tokens=12)


async def stream_text(client: GenerationClient, **kwargs: Any) -> tuple[str, list[pb.GenerateStreamResponse]]:
    messages = [m async for m in client.generate_stream(**kwargs)]
    return "".join(m.delta.text for m in messages if m.HasField("delta")), messages


# -- generation -------------------------------------------------------------------------------------------------------


async def test_greedy_answer_names_paris(base_answer: pb.GenerateResponse) -> None:
    assert "Paris" in base_answer.text
    assert base_answer.finish_reason == common_pb2.FINISH_REASON_STOP
    assert base_answer.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert not base_answer.HasField("adapter")


async def test_usage_counts_the_rendered_prompt_and_the_completion(base_answer: pb.GenerateResponse) -> None:
    from transformers import AutoTokenizer

    from lorag_models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model().path)
    rendered: Any = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    prompt_ids = rendered["input_ids"]
    usage = base_answer.usage
    assert usage.prompt_tokens == len(prompt_ids)
    # the completion's tokens plus the end-of-sequence token that stopped it
    completion_ids = tokenizer(base_answer.text, add_special_tokens=False)["input_ids"]
    assert usage.completion_tokens == len(completion_ids) + 1
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    timing = base_answer.timing
    assert 0 < timing.time_to_first_token_ns <= timing.total_ns
    assert 0 < timing.inference_ns <= timing.total_ns


async def test_stream_deltas_concatenate_to_the_generated_text(
    client: GenerationClient, base_answer: pb.GenerateResponse
) -> None:
    text, messages = await stream_text(client, messages=QUESTION, temperature=0, max_new_tokens=12)
    assert text == base_answer.text
    assert [m.WhichOneof("event") for m in messages][-1] == "summary"
    assert all(m.HasField("delta") for m in messages[:-1]) and len(messages) > 2
    summary = messages[-1].summary
    assert summary.usage == base_answer.usage
    assert summary.finish_reason == common_pb2.FINISH_REASON_STOP
    assert sum(m.delta.token_count for m in messages[:-1]) == summary.usage.completion_tokens - 1


async def test_stop_sequence_cuts_the_text(client: GenerationClient, base_answer: pb.GenerateResponse) -> None:
    assert " Paris" in base_answer.text
    reply = await client.generate(messages=QUESTION, temperature=0, max_new_tokens=12, stop=[" Paris", "zzz"])
    assert reply.text == base_answer.text.split(" Paris")[0]
    assert reply.finish_reason == common_pb2.FINISH_REASON_STOP_SEQUENCE
    assert reply.matched_stop_sequence == " Paris"
    streamed, messages = await stream_text(client, messages=QUESTION, temperature=0, max_new_tokens=12, stop=[" Paris"])
    assert streamed == reply.text
    assert messages[-1].summary.matched_stop_sequence == " Paris"


async def test_max_new_tokens_ends_with_length(client: GenerationClient) -> None:
    reply = await client.generate(prompt="Once upon a time, in a land far away,", temperature=0, max_new_tokens=5)
    assert reply.finish_reason == common_pb2.FINISH_REASON_LENGTH
    assert reply.usage.completion_tokens == 5
    assert reply.text


async def test_a_seed_reproduces_a_sampled_answer(client: GenerationClient) -> None:
    kwargs: dict[str, Any] = dict(prompt="My favourite animal is the", temperature=1.0, max_new_tokens=8)
    first = await client.generate(seed=1234, **kwargs)
    again = await client.generate(seed=1234, **kwargs)
    other = await client.generate(seed=99, **kwargs)
    assert first.text == again.text
    assert other.text != first.text


async def test_model_info(client: GenerationClient) -> None:
    info = await client.model_info()
    assert info.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (info.backend, info.device, info.dtype) == ("transformers", "cpu", "float32")
    assert info.max_context_tokens == 8192 and info.has_chat_template
    assert info.max_new_tokens_limit == 1024 and info.max_batch_size == 8 and info.max_loaded_adapters == 4


# -- refused requests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GenerateRequest(), "input"),
        (pb.GenerateRequest(chat=common_pb2.Chat()), "chat.messages"),
        (
            pb.GenerateRequest(
                chat=common_pb2.Chat(messages=[common_pb2.ChatMessage(role=common_pb2.ROLE_ASSISTANT, content="hi")])
            ),
            "chat.messages[0].role",
        ),
        (
            pb.GenerateRequest(
                chat=common_pb2.Chat(
                    messages=[
                        common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="hi"),
                        common_pb2.ChatMessage(role=common_pb2.ROLE_SYSTEM, content="late"),
                        common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content="again"),
                    ]
                )
            ),
            "chat.messages[1].role",
        ),
        (pb.GenerateRequest(prompt="hi", sampling=common_pb2.SamplingParams(temperature=3)), "sampling.temperature"),
        (
            pb.GenerateRequest(prompt="hi", sampling=common_pb2.SamplingParams(max_new_tokens=5000)),
            "sampling.max_new_tokens",
        ),
        (pb.GenerateRequest(prompt="hi", adapter="bad name"), "adapter"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    client: GenerationClient, request_: pb.GenerateRequest, field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await client.invoke("Generate", request_)
    assert caught.value.dependency == "generation"
    assert field in reasons(caught.value)[1]


async def test_an_over_long_prompt_names_its_size_and_the_limit(client: GenerationClient) -> None:
    for call in (client.generate, client.generate_stream):
        with pytest.raises(InvalidArgument) as caught:
            result = call(messages=[{"role": "user", "content": "hello " * 8300}], max_new_tokens=10)
            if hasattr(result, "__anext__"):
                await result.__anext__()
            else:
                await result
        assert reasons(caught.value) == ("PROMPT_TOO_LONG", ["chat"])
        assert "8192" in caught.value.message and "tokens" in caught.value.message


async def test_an_unknown_adapter_is_not_found(client: GenerationClient) -> None:
    with pytest.raises(NotFound) as caught:
        await client.generate(prompt="hi", adapter="nobody-loaded-this", max_new_tokens=2)
    assert "no adapter registry" in caught.value.message
    with pytest.raises(NotFound):
        await client.generate(prompt="hi", adapter="nobody@production", max_new_tokens=2)


async def test_an_adapter_for_another_base_model_is_refused(
    client: GenerationClient, demo_adapter: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-base"
    shutil.copytree(demo_adapter, other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.2-1B"
    (other / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(FailedPrecondition) as caught:
        await client.load_adapter("other-base", source_uri=str(other))
    assert "meta-llama/Llama-3.2-1B" in caught.value.message and "SmolLM2-135M-Instruct" in caught.value.message
    with pytest.raises(NotFound):
        await client.load_adapter("missing", source_uri=str(tmp_path / "nothing-here"))


# -- adapters ---------------------------------------------------------------------------------------------------------


async def test_adapters_change_the_output_and_share_a_batch_with_the_base(
    client: GenerationClient,
    make_demo_adapter: Callable[[int], Path],
    base_answer: pb.GenerateResponse,
) -> None:
    first, second = make_demo_adapter(0), make_demo_adapter(1)
    loaded = await client.load_adapter("demo-a", source_uri=str(first))
    assert loaded.adapter.state == pb.Adapter.STATE_LOADED and loaded.adapter.rank == 8
    assert (await client.load_adapter("demo-a", source_uri=str(first))).adapter.state == pb.Adapter.STATE_LOADED
    await client.load_adapter("demo.b", source_uri=str(second))
    try:
        kwargs: dict[str, Any] = dict(messages=QUESTION, temperature=0, max_new_tokens=12)
        alone = {name: (await client.generate(adapter=name, **kwargs)).text for name in ("demo-a", "demo.b")}
        alone[""] = base_answer.text
        assert alone["demo-a"] != alone[""] and alone["demo.b"] != alone[""]
        order = ["demo-a", "", "demo.b", "demo-a", ""]
        together = await asyncio.gather(*(client.generate(adapter=name, **kwargs) for name in order))
        assert [reply.text for reply in together] == [alone[name] for name in order]
        assert [reply.adapter.name for reply in together] == order
        with pytest.raises(AlreadyExists):
            await client.load_adapter("demo-a", source_uri=str(second))
        page = await client.list_adapters(page_size=1)
        assert [a.name for a in page.adapters] == ["demo-a"] and page.next_page_token
        rest = await client.list_adapters(page_token=page.next_page_token)
        assert [a.name for a in rest.adapters] == ["demo.b"] and not rest.next_page_token
        listed = page.adapters[0]
        assert listed.request_count >= 3 and listed.HasField("last_used_time") and listed.HasField("load_time")
        assert list(listed.target_modules) == ["k_proj", "o_proj", "q_proj", "v_proj"]
        assert rest.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    finally:
        await client.unload_adapter("demo-a")
        await client.unload_adapter("demo.b")
    with pytest.raises(NotFound):
        await client.unload_adapter("demo-a")
    await client.unload_adapter("demo-a", allow_missing=True)
    assert (await client.list_adapters()).adapters == []


# -- capacity: one decode slot, no queue, one adapter slot ----------------------------------------------------------


@pytest.fixture(scope="module")
async def tight_client():
    app, generation = create_app(GenerationSettings(port=0, max_batch_size=1, max_queue_size=0, max_loaded_adapters=1))
    await app.start()
    await generation.start()
    await app.set_serving()
    async with GenerationClient(app.address, timeout=600) as c:
        yield c
    await app.stop(0)
    await generation.close()


async def test_a_full_queue_is_resource_exhausted_and_a_cancelled_stream_frees_its_slot(
    tight_client: GenerationClient,
) -> None:
    stream = tight_client.generate_stream(prompt="1, 2, 3, 4, 5, 6,", temperature=0, max_new_tokens=1000)
    first = await stream.__anext__()
    assert first.HasField("delta")
    with pytest.raises(ResourceExhausted) as caught:
        await tight_client.generate(prompt="hi", max_new_tokens=1)
    assert reasons(caught.value)[0] == "QUEUE_FULL"
    await stream.aclose()  # cancels the call: the server drops the row at its next step
    for _ in range(100):
        try:
            reply = await tight_client.generate(prompt="hi", temperature=0, max_new_tokens=2)
            break
        except ResourceExhausted:  # any other error fails the test
            await asyncio.sleep(0.05)
    else:
        pytest.fail("the cancelled stream never gave its slot back")
    assert reply.usage.completion_tokens >= 1


async def test_least_recently_used_adapter_is_evicted_and_reloaded(
    tight_client: GenerationClient, make_demo_adapter: Callable[[int], Path]
) -> None:
    kwargs: dict[str, Any] = dict(messages=QUESTION, temperature=0, max_new_tokens=6)
    await tight_client.load_adapter("first", source_uri=str(make_demo_adapter(0)))
    first_text = (await tight_client.generate(adapter="first", **kwargs)).text
    await tight_client.load_adapter("second", source_uri=str(make_demo_adapter(1)))
    states = {a.name: a.state for a in (await tight_client.list_adapters()).adapters}
    assert states == {"first": pb.Adapter.STATE_EVICTED, "second": pb.Adapter.STATE_LOADED}
    again = await tight_client.generate(adapter="first", **kwargs)  # reloaded on demand, evicting "second"
    assert again.text == first_text
    states = {a.name: a.state for a in (await tight_client.list_adapters()).adapters}
    assert states == {"first": pb.Adapter.STATE_LOADED, "second": pb.Adapter.STATE_EVICTED}
    await tight_client.load_adapter("first", source_uri=str(make_demo_adapter(0)), pin=True)
    with pytest.raises(ResourceExhausted):
        await tight_client.generate(adapter="second", **kwargs)  # the only slot holds a pinned adapter
    await tight_client.unload_adapter("first")
    await tight_client.unload_adapter("second")
