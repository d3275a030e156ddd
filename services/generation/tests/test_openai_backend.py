"""The openai backend against a real HTTP server that speaks the OpenAI protocol the way vLLM does.

The server (``lorag_testing.openai_server``, a fake on pytest-httpserver) answers with text derived from each
request: the prompt (or last user message) split on ``|`` is the token stream, an adapter model upper-cases it behind
``<name>``. So every test asserts exact text, finish reasons, usage and the requests the backend sent. One flavour
of the server behaves like vLLM (stop strings applied server-side with ``stop_reason``, usage chunk, ``/tokenize``,
runtime LoRA routes, ``max_model_len``); the other like a bare OpenAI-compatible server that has none of that and
ignores ``stop``.

Set ``LORAG_TEST_OPENAI_URL`` (e.g. ``http://localhost:8000/v1``; ``LORAG_TEST_OPENAI_MODEL`` to pick the model,
``LORAG_TEST_OPENAI_API_KEY`` if the server has one) to run the live test against a real server.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lorag_core.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from lorag_generation.backends.base import (
    AdapterFiles,
    AdapterHandle,
    Finished,
    FinishReason,
    GenerationBackend,
    GenerationInput,
    GenerationJob,
    Message,
    Role,
    SamplingSettings,
    TextDelta,
)
from lorag_generation.backends.openai import OpenAIBackend, estimate_tokens
from lorag_testing.openai_server import SLOW_TOKENS, OpenAIProtocolServer

pytestmark = pytest.mark.service
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def make_backend(url: str, **kwargs: Any) -> OpenAIBackend:
    options: dict[str, Any] = {"max_retries": 0}  # error tests must not wait for the client's backoff
    options.update(kwargs)
    return OpenAIBackend(
        url, None, options.pop("model", MODEL), timeout=10.0, max_new_tokens_limit=64, max_loaded_adapters=4, **options
    )


@pytest.fixture(scope="module")
def vllm() -> Iterator[OpenAIProtocolServer]:
    with OpenAIProtocolServer(model=MODEL) as server:
        yield server


@pytest.fixture(scope="module")
def plain() -> Iterator[OpenAIProtocolServer]:
    """A bare OpenAI-compatible server: no usage chunk, no stop_reason, no vLLM routes, and it ignores ``stop``."""
    with OpenAIProtocolServer(model=MODEL, vllm_extensions=False, honour_stop=False, send_usage=False) as server:
        yield server


@pytest.fixture(scope="module")
async def backend(vllm: OpenAIProtocolServer) -> AsyncIterator[OpenAIBackend]:
    b = make_backend(vllm.base_url)
    await b.start()
    yield b
    await b.close()


@pytest.fixture(scope="module")
async def plain_backend(plain: OpenAIProtocolServer) -> AsyncIterator[OpenAIBackend]:
    b = make_backend(plain.base_url, default_max_context_tokens=2048)
    await b.start()
    yield b
    await b.close()


def prompt_job(prompt: str, adapter: str | None = None, **sampling: Any) -> GenerationJob:
    return GenerationJob(
        input=GenerationInput(prompt=prompt),
        sampling=SamplingSettings(**{"temperature": 0.0, **sampling}),
        adapter=AdapterHandle(adapter) if adapter else None,
        request_id="req-1",
    )


def chat_job(*messages: tuple[Role, str], **sampling: Any) -> GenerationJob:
    return GenerationJob(
        input=GenerationInput(messages=tuple(Message(role, text) for role, text in messages)),
        sampling=SamplingSettings(**sampling),
    )


async def collect(backend: OpenAIBackend, job: GenerationJob) -> tuple[list[TextDelta], Finished]:
    items = [item async for item in backend.stream(job)]
    *rest, finished = items
    assert isinstance(finished, Finished)
    deltas = [d for d in rest if isinstance(d, TextDelta)]
    assert deltas == rest  # every item before the last is a delta
    return deltas, finished


def text_of(deltas: list[TextDelta]) -> str:
    return "".join(d.text for d in deltas)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def adapter_dir(root: Path, name: str, rank: int = 8) -> str:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(
        json.dumps({"r": rank, "lora_alpha": 16, "base_model_name_or_path": MODEL, "target_modules": ["q_proj"]})
    )
    return str(folder)


# -- start and info --------------------------------------------------------------------------------------------


async def test_start_reads_the_model_card(backend: OpenAIBackend, vllm: OpenAIProtocolServer) -> None:
    assert isinstance(backend, GenerationBackend)
    info = backend.info()
    assert info.model == MODEL
    assert info.backend == "openai"
    assert info.max_context_tokens == vllm.max_model_len == 512
    assert info.max_new_tokens_limit == 64
    assert info.max_loaded_adapters == 4
    assert info.has_chat_template is True
    assert info.device == ""
    assert info.extra["token_counting"] == "server"
    assert info.extra["context_length_source"] == "server"


async def test_start_without_vllm_extensions_uses_defaults(plain_backend: OpenAIBackend) -> None:
    info = plain_backend.info()
    assert info.max_context_tokens == 2048
    assert info.extra["token_counting"] == "estimate"


async def test_start_refuses_a_server_without_the_base_model(vllm: OpenAIProtocolServer) -> None:
    other = make_backend(vllm.base_url, model="someone/other-model")
    with pytest.raises(Unavailable) as caught:
        await other.start()
    assert "someone/other-model" in caught.value.message
    assert MODEL in caught.value.message  # names what the server does have
    assert caught.value.reason == "MODEL_NOT_SERVED"


async def test_start_with_the_server_down_is_unavailable() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    down = make_backend(url)
    with pytest.raises(Unavailable) as caught:
        await down.start()
    assert url in caught.value.message


# -- generation ------------------------------------------------------------------------------------------------


async def test_prompt_streams_deltas_that_join_to_the_text(backend: OpenAIBackend, vllm: OpenAIProtocolServer) -> None:
    deltas, finished = await collect(backend, prompt_job("Hel|lo| wor|ld"))
    assert [d.text for d in deltas] == ["Hel", "lo", " wor", "ld"]
    assert [d.token_count for d in deltas] == [1, 1, 1, 1]
    assert finished.finish_reason is FinishReason.STOP
    assert finished.matched_stop_sequence == ""
    assert (finished.prompt_tokens, finished.completion_tokens) == (4, 4)
    assert finished.queue_ns == 0
    assert 0 < finished.time_to_first_token_ns <= finished.inference_ns

    path, body = vllm.requests[-1]
    assert path == "/v1/completions"
    assert body["model"] == MODEL
    assert body["prompt"] == "Hel|lo| wor|ld"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (256, 0.0, 1.0)
    for absent in ("stop", "seed", "top_k", "repetition_penalty"):
        assert absent not in body  # defaults are not sent


async def test_chat_goes_to_chat_completions(backend: OpenAIBackend, vllm: OpenAIProtocolServer) -> None:
    job = chat_job((Role.SYSTEM, "Be brief."), (Role.USER, "Par|is| is| nice"), temperature=0.5)
    deltas, finished = await collect(backend, job)
    assert text_of(deltas) == "Paris is nice"
    assert finished.finish_reason is FinishReason.STOP
    # the fake template: tokens of each message + 2 per message + 1 for the opened assistant turn
    assert finished.prompt_tokens == (1 + 2) + (4 + 2) + 1
    assert finished.completion_tokens == 4
    path, body = vllm.requests[-1]
    assert path == "/v1/chat/completions"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Par|is| is| nice"},
    ]
    assert body["temperature"] == 0.5


async def test_sampling_settings_reach_the_server(backend: OpenAIBackend, vllm: OpenAIProtocolServer) -> None:
    job = prompt_job(
        "a|b",
        temperature=0.8,
        top_p=0.9,
        top_k=40,
        max_new_tokens=12,
        stop_sequences=("###", "END"),
        seed=7,
        repetition_penalty=1.3,
    )
    await collect(backend, job)
    body = vllm.bodies("/v1/completions")[-1]
    assert body["temperature"] == pytest.approx(0.8)
    assert body["top_p"] == pytest.approx(0.9)
    assert body["max_tokens"] == 12
    assert body["stop"] == ["###", "END"]
    assert body["seed"] == 7
    assert body["top_k"] == 40  # vLLM's sampling extensions travel in the body
    assert body["repetition_penalty"] == pytest.approx(1.3)


async def test_max_new_tokens_ends_with_length(backend: OpenAIBackend) -> None:
    deltas, finished = await collect(backend, prompt_job("a|b|c|d|e", max_new_tokens=3))
    assert text_of(deltas) == "abc"
    assert finished.finish_reason is FinishReason.LENGTH
    assert finished.completion_tokens == 3


async def test_server_side_stop_reports_the_stop_reason(backend: OpenAIBackend, vllm: OpenAIProtocolServer) -> None:
    deltas, finished = await collect(backend, prompt_job("one| two| <e|nd>| three", stop_sequences=("<end>",)))
    assert text_of(deltas) == "one two "
    assert not any("<" in d.text for d in deltas)
    assert finished.finish_reason is FinishReason.STOP_SEQUENCE
    assert finished.matched_stop_sequence == "<end>"
    assert finished.completion_tokens == 4  # the server's usage: the tokens it decoded, the stop string's included
    assert sum(d.token_count for d in deltas) <= 4


async def test_client_cuts_a_stop_split_across_chunks(
    plain_backend: OpenAIBackend, plain: OpenAIProtocolServer
) -> None:
    """The bare server ignores ``stop``: the stop string arrives as "<e" + "nd>" and the backend cuts it."""
    prompt = "one| two| <e|nd>| three| four"
    deltas, finished = await collect(plain_backend, prompt_job(prompt, stop_sequences=("<end>",)))
    assert [d.text for d in deltas] == ["one", " two", " "]
    assert text_of(deltas) == "one two "
    assert finished.finish_reason is FinishReason.STOP_SEQUENCE
    assert finished.matched_stop_sequence == "<end>"
    assert finished.completion_tokens == 4  # counted: no usage chunk, and the stream was closed at the match
    assert finished.prompt_tokens == estimate_tokens(GenerationInput(prompt=prompt))
    assert plain.bodies("/v1/completions")[-1]["stop"] == ["<end>"]


async def test_held_text_is_released_when_the_stop_does_not_complete(plain_backend: OpenAIBackend) -> None:
    deltas, finished = await collect(plain_backend, prompt_job("a|<e|x", stop_sequences=("<end>",)))
    assert [d.text for d in deltas] == ["a", "<ex"]
    assert [d.token_count for d in deltas] == [1, 2]  # "<e" was held back, then released with "x"
    assert finished.finish_reason is FinishReason.STOP
    assert finished.matched_stop_sequence == ""


async def test_usage_is_counted_when_the_server_sends_none(plain_backend: OpenAIBackend) -> None:
    deltas, finished = await collect(plain_backend, prompt_job("abcdefgh|ij|k"))
    assert text_of(deltas) == "abcdefghijk"
    assert finished.completion_tokens == 3
    assert finished.prompt_tokens == 4  # 13 characters / 4, rounded up


# -- adapters --------------------------------------------------------------------------------------------------


async def test_adapter_lifecycle(backend: OpenAIBackend, vllm: OpenAIProtocolServer, tmp_path: Path) -> None:
    first, second = adapter_dir(tmp_path, "v1"), adapter_dir(tmp_path, "v2")
    files = AdapterFiles(path=first, base_model=MODEL, rank=8, lora_alpha=16, target_modules=("q_proj",))
    await backend.load_adapter("pirate", files)
    assert vllm.loras == {"pirate": first}
    assert vllm.bodies("/v1/load_lora_adapter")[-1] == {"lora_name": "pirate", "lora_path": first}
    assert await backend.server_adapters() == {"pirate": first}

    deltas, finished = await collect(backend, prompt_job("hel|lo", adapter="pirate"))
    assert text_of(deltas) == "<pirate>HELLO"
    assert finished.completion_tokens == 3
    assert vllm.bodies("/v1/completions")[-1]["model"] == "pirate"  # vLLM serves a LoRA module as a model

    unloads = len(vllm.bodies("/v1/unload_lora_adapter"))
    await backend.load_adapter("pirate", files)  # vLLM answers "already loaded": same path, so success
    assert len(vllm.bodies("/v1/unload_lora_adapter")) == unloads
    await backend.load_adapter("pirate", AdapterFiles(second, MODEL, 8, 16, ("q_proj",)))  # another path: replaced
    assert vllm.loras == {"pirate": second}

    await backend.unload_adapter("pirate")
    assert vllm.loras == {}
    with pytest.raises(NotFound) as caught:
        await backend.unload_adapter("pirate")
    assert "pirate" in caught.value.message
    with pytest.raises(NotFound) as caught:
        await collect(backend, prompt_job("hel|lo", adapter="pirate"))
    assert caught.value.metadata["adapter"] == "pirate"


async def test_adapter_load_refusals(backend: OpenAIBackend, plain_backend: OpenAIBackend, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await backend.load_adapter("ghost", AdapterFiles(str(tmp_path / "nowhere"), MODEL, 8, 16, ("q_proj",)))
    wide = adapter_dir(tmp_path, "wide", rank=64)
    with pytest.raises(FailedPrecondition) as caught:
        await backend.load_adapter("wide", AdapterFiles(wide, MODEL, 64, 16, ("q_proj",)))
    assert "max_lora_rank" in caught.value.message
    with pytest.raises(FailedPrecondition) as caught:  # no runtime LoRA routes on a bare server
        await plain_backend.load_adapter("wide", AdapterFiles(wide, MODEL, 8, 16, ("q_proj",)))
    assert caught.value.reason == "RUNTIME_LORA_DISABLED"


# -- token counting --------------------------------------------------------------------------------------------


async def test_token_counts_come_from_the_server(backend: OpenAIBackend, vllm: OpenAIProtocolServer) -> None:
    prompt = GenerationInput(prompt="a|b|c|d|e")
    chat = GenerationInput(messages=(Message(Role.USER, "x|y"),))
    assert await backend.count_prompt_tokens_async(prompt) == 5
    assert await backend.count_prompt_tokens_async(chat) == 2 + 2 + 1
    assert vllm.bodies("/tokenize")[-1] == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x|y"}],
        "add_generation_prompt": True,
    }
    # off the event loop the synchronous method asks the server; on it, it must not block and estimates
    assert await asyncio.to_thread(backend.count_prompt_tokens, prompt) == 5
    assert backend.count_prompt_tokens(prompt) == estimate_tokens(prompt) == 3


# -- errors ----------------------------------------------------------------------------------------------------


async def test_over_long_prompt_is_invalid_argument(backend: OpenAIBackend) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await collect(backend, prompt_job("|".join("w" * 500), max_new_tokens=16))
    assert caught.value.violations[0].field == "prompt"
    assert "maximum context length is 512 tokens" in caught.value.violations[0].description
    with pytest.raises(InvalidArgument) as caught:
        await collect(backend, chat_job((Role.USER, "|".join("w" * 500)), max_new_tokens=16))
    assert caught.value.violations[0].field == "chat"


async def test_http_status_mapping(backend: OpenAIBackend) -> None:
    with pytest.raises(ResourceExhausted):
        await collect(backend, prompt_job("!status=429"))
    with pytest.raises(Unavailable) as caught:
        await collect(backend, prompt_job("!status=503"))
    assert "503" in caught.value.message
    assert "simulated status 503" in caught.value.message  # the server's own message, from OpenAI's error body
    with pytest.raises(NotFound):
        await collect(backend, prompt_job("x", adapter="never-loaded"))


@pytest.mark.parametrize("directive", ["!midfail", "!midfail=flat"])
async def test_error_event_mid_stream_ends_the_stream(backend: OpenAIBackend, directive: str) -> None:
    """Deltas already sent stay sent; the error event then ends the stream with its status and no summary."""
    received: list[Any] = []
    with pytest.raises(Unavailable) as caught:
        async for item in backend.stream(prompt_job(f"{directive}|one| two| three")):
            received.append(item)
    assert received == [TextDelta("one", 1), TextDelta(" two", 1)]
    assert "simulated engine failure" in caught.value.message
    assert caught.value.metadata["http_status"] == "500"


async def test_server_gone_after_start_is_unavailable() -> None:
    server = OpenAIProtocolServer(model=MODEL).start()
    gone = make_backend(server.base_url)
    await gone.start()
    await asyncio.to_thread(server.stop)
    try:
        with pytest.raises(Unavailable) as caught:
            await collect(gone, prompt_job("a|b"))
        assert server.base_url in caught.value.message
    finally:
        await gone.close()


# -- cancellation ----------------------------------------------------------------------------------------------


async def test_closing_the_stream_closes_the_http_stream(backend: OpenAIBackend, vllm: OpenAIProtocolServer) -> None:
    vllm.disconnected.clear()
    before = vllm.disconnects
    stream = backend.stream(prompt_job("!slow", max_new_tokens=SLOW_TOKENS))
    received = [await anext(stream), await anext(stream)]
    assert received == [TextDelta(" tick", 1), TextDelta(" tick", 1)]
    await stream.aclose()
    assert await asyncio.to_thread(vllm.disconnected.wait, 30)  # a hang guard, not a timing assertion
    assert vllm.disconnects == before + 1
    assert vllm.slow_tokens_sent < SLOW_TOKENS


async def test_close_cancels_running_streams(vllm: OpenAIProtocolServer) -> None:
    closing = make_backend(vllm.base_url)
    await closing.start()
    stream = closing.stream(prompt_job("!slow", max_new_tokens=SLOW_TOKENS))
    first = await anext(stream)
    assert first == TextDelta(" tick", 1)
    await closing.close()
    rest = [item async for item in stream]
    assert isinstance(rest[-1], Finished)
    assert rest[-1].finish_reason is FinishReason.CANCELLED
    with pytest.raises(Unavailable):
        await collect(closing, prompt_job("a"))


# -- live ------------------------------------------------------------------------------------------------------


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("LORAG_TEST_OPENAI_URL"), reason="LORAG_TEST_OPENAI_URL is not set")
async def test_live_server_generates_greedily() -> None:
    url = os.environ["LORAG_TEST_OPENAI_URL"]
    model = os.environ.get("LORAG_TEST_OPENAI_MODEL", MODEL)
    live = OpenAIBackend(
        url,
        os.environ.get("LORAG_TEST_OPENAI_API_KEY"),
        model,
        timeout=60.0,
        max_new_tokens_limit=64,
        max_loaded_adapters=0,
    )
    await live.start()
    try:
        job = chat_job((Role.USER, "What is the capital of France?"), temperature=0.0, max_new_tokens=8)
        deltas, finished = await collect(live, job)
        again, _ = await collect(live, job)
        assert text_of(deltas).strip()
        assert text_of(deltas) == text_of(again)  # greedy decoding is deterministic
        assert finished.finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
        assert 0 < finished.completion_tokens <= 8
        assert finished.prompt_tokens > 0
    finally:
        await live.close()
