"""LocalEmbedder with the real packaged all-MiniLM-L6-v2 (loaded once for the module)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest

from lorag_core.errors import InvalidArgument, ResourceExhausted, Unavailable
from lorag_embedding.backends import Embedder, InputType, LocalEmbedder, default_model_path

LONG_TEXT = "word " * 400  # 400 word tokens + [CLS] + [SEP]


@pytest.fixture(scope="module")
async def embedder() -> AsyncIterator[LocalEmbedder]:
    e = LocalEmbedder(torch_threads=2)
    await e.start()
    yield e
    await e.close()


async def embed_one(embedder: LocalEmbedder, text: str, input_type: InputType = InputType.DOCUMENT) -> np.ndarray:
    return (await embedder.embed([text], input_type, truncate=True)).vectors[0]


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


@pytest.mark.unit
def test_default_model_path_is_the_packaged_model() -> None:
    path = default_model_path()
    assert path.name == "model" and (path / "modules.json").is_file()


@pytest.mark.service
async def test_info(embedder: LocalEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    info = embedder.info
    assert info.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.backend == "local"
    assert info.dimensions == 384
    assert info.max_input_tokens == 256
    assert info.normalized is True
    assert info.prompts == {}  # MiniLM has no query/document prompts
    assert info.max_client_batch_size == 256 and info.max_batch_tokens == 16384
    assert embedder.device == "cpu"


@pytest.mark.service
async def test_vectors_are_384_d_unit_norm(embedder: LocalEmbedder) -> None:
    result = await embedder.embed(["hello world", "The quick brown fox."], InputType.DOCUMENT, truncate=True)
    assert result.vectors.shape == (2, 384) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert result.token_counts == [4, 7]  # [CLS] hello world [SEP]; [CLS] the quick brown fox . [SEP]
    assert result.truncated == [False, False]
    assert result.inference_ns > 0 and result.queue_ns > 0


@pytest.mark.service
async def test_token_counts_match_the_models_tokenizer(embedder: LocalEmbedder) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    texts = ["Ünïcödé, with punctuation!", "tabs\tand\nnewlines", "émojis 🙂 and CJK 漢字", "x" * 300]
    result = await embedder.embed(texts, InputType.DOCUMENT, truncate=True)
    full = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
    assert result.token_counts == [min(n, 256) for n in full]
    assert result.truncated == [n > 256 for n in full]


@pytest.mark.service
async def test_similar_sentences_score_higher_than_unrelated(embedder: LocalEmbedder) -> None:
    query = await embed_one(embedder, "How do I bake bread at home?", InputType.QUERY)
    docs = (
        await embedder.embed(
            ["A simple recipe for homemade bread baked in your oven.", "The central bank raised interest rates."],
            InputType.DOCUMENT,
            truncate=True,
        )
    ).vectors
    related, unrelated = docs @ query
    assert related > unrelated + 0.3


@pytest.mark.service
async def test_batched_equals_single(embedder: LocalEmbedder) -> None:
    texts = [
        "short",
        "a somewhat longer sentence about embeddings and retrieval",
        "LoRA adapters fine-tune a small number of parameters.",
        "word " * 120,
    ]
    batched = (await embedder.embed(texts, InputType.DOCUMENT, truncate=True)).vectors
    singles = np.stack([await embed_one(embedder, t) for t in texts])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


@pytest.mark.service
async def test_long_text_is_truncated_when_allowed(embedder: LocalEmbedder) -> None:
    result = await embedder.embed(["short one", LONG_TEXT], InputType.DOCUMENT, truncate=True)
    assert result.token_counts == [4, 256]
    assert result.truncated == [False, True]
    # What the model read is exactly the first 254 word tokens.
    np.testing.assert_allclose(result.vectors[1], await embed_one(embedder, "word " * 254), atol=1e-5)


@pytest.mark.service
async def test_long_text_is_refused_when_truncation_is_off(embedder: LocalEmbedder) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await embedder.embed(["short one", LONG_TEXT], InputType.DOCUMENT, truncate=False)
    (violation,) = refused.value.violations
    assert violation.field == "texts[1]"
    assert "402 tokens" in violation.description and "256" in violation.description
    assert refused.value.reason == "TEXT_TOO_LONG"
    # At the limit exactly is fine.
    result = await embedder.embed(["word " * 254], InputType.DOCUMENT, truncate=False)
    assert result.token_counts == [256] and result.truncated == [False]


@pytest.mark.service
async def test_request_validation(embedder: LocalEmbedder) -> None:
    with pytest.raises(InvalidArgument) as empty_list:
        await embedder.embed([], InputType.QUERY, truncate=True)
    assert [v.field for v in empty_list.value.violations] == ["texts"]

    with pytest.raises(InvalidArgument) as blank:
        await embedder.embed(["fine", "", "  \n\t"], InputType.QUERY, truncate=True)
    assert [v.field for v in blank.value.violations] == ["texts[1]", "texts[2]"]

    with pytest.raises(InvalidArgument) as too_many:
        await embedder.embed(["x"] * 257, InputType.DOCUMENT, truncate=True)
    assert [v.field for v in too_many.value.violations] == ["texts"]
    assert "256" in too_many.value.violations[0].description


@pytest.mark.service
async def test_64_concurrent_callers_are_packed_and_get_their_own_vectors(embedder: LocalEmbedder) -> None:
    texts = [f"Caller number {i} asks about topic {i * 7 % 13}." for i in range(64)]
    expected = (await embedder.embed(texts, InputType.QUERY, truncate=True)).vectors
    before = embedder.stats().batches

    results = await asyncio.gather(*(embedder.embed([t], InputType.QUERY, truncate=True) for t in texts))

    batches = embedder.stats().batches - before
    assert batches < 64, f"{batches} batches for 64 callers: no packing happened"
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.vectors[0], expected[i], atol=1e-5)
        assert result.token_counts[0] > 0


@pytest.mark.service
async def test_embedding_runs_off_the_event_loop(embedder: LocalEmbedder) -> None:
    """While a large batch is in the model, the loop still answers quickly."""
    texts = [f"{i} " + "token " * 150 for i in range(24)]
    task = asyncio.ensure_future(embedder.embed(texts, InputType.DOCUMENT, truncate=True))
    worst, ticks = 0.0, 0
    while not task.done():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        worst = max(worst, time.perf_counter() - started)
        ticks += 1
    result = await task
    assert result.inference_ns > 50_000_000  # long enough for the measurement to mean something
    assert ticks > 10 and worst < 0.1


@pytest.fixture(scope="module")
async def prompted(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalEmbedder]:
    """MiniLM again, in a folder whose sentence-transformers config defines a "query" prompt."""
    folder = tmp_path_factory.mktemp("prompted-minilm")
    source = default_model_path()
    for entry in source.iterdir():
        if entry.name != "config_sentence_transformers.json":
            (folder / entry.name).symlink_to(entry)
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": None})
    )
    e = LocalEmbedder(folder, model_id="minilm-with-prompts", torch_threads=2)
    await e.start()
    yield e
    await e.close()


@pytest.mark.service
async def test_input_type_selects_the_models_prompt(prompted: LocalEmbedder, embedder: LocalEmbedder) -> None:
    assert prompted.info.model_id == "minilm-with-prompts"
    assert prompted.info.prompts == {"query": "query: "}  # the empty "document" prompt is no prompt
    text = "what is a lora adapter"
    query = await prompted.embed([text], InputType.QUERY, truncate=True)
    document = await prompted.embed([text], InputType.DOCUMENT, truncate=True)
    assert query.token_counts == [document.token_counts[0] + 2]  # "query" and ":"
    np.testing.assert_allclose(query.vectors[0], await embed_one(embedder, "query: " + text), atol=1e-5)
    np.testing.assert_allclose(document.vectors[0], await embed_one(embedder, text), atol=1e-5)

    # Queries and documents in flight together never share a forward pass, and each gets its own prompt.
    mixed = await asyncio.gather(
        *(prompted.embed([f"{text} {i}"], t, truncate=True) for i in range(8) for t in InputType)
    )
    for i in range(8):
        q, d = mixed[2 * i].vectors[0], mixed[2 * i + 1].vectors[0]
        np.testing.assert_allclose(q, await embed_one(embedder, f"query: {text} {i}"), atol=1e-5)
        np.testing.assert_allclose(d, await embed_one(embedder, f"{text} {i}"), atol=1e-5)


@pytest.fixture(scope="module")
async def tiny_queue() -> AsyncIterator[LocalEmbedder]:
    """A second embedder with a queue of 8 texts and one text per batch, to make back-pressure observable."""
    e = LocalEmbedder(
        torch_threads=2, max_queue_texts=8, max_client_batch_size=8, max_batch_size=1, max_batch_tokens=512
    )
    await e.start()
    yield e
    await e.close()


@pytest.mark.service
async def test_full_queue_gives_resource_exhausted(tiny_queue: LocalEmbedder) -> None:
    long_texts = [f"{i} " + "token " * 250 for i in range(8)]
    first = asyncio.ensure_future(tiny_queue.embed(long_texts, InputType.DOCUMENT, truncate=True))
    await wait_for(lambda: tiny_queue.stats().queue_depth >= 6)
    # Refused while at least 5 of the first request's texts wait: each takes tens of ms in the model.
    with pytest.raises(ResourceExhausted) as refused:
        await tiny_queue.embed(["one", "two", "three", "four"], InputType.DOCUMENT, truncate=True)
    assert refused.value.reason == "QUEUE_FULL"
    assert refused.value.metadata["max_queue_texts"] == "8"
    result = await first
    assert result.vectors.shape == (8, 384)
    # Once drained, the queue takes a full request again.
    assert (await tiny_queue.embed(long_texts, InputType.DOCUMENT, truncate=True)).vectors.shape == (8, 384)


@pytest.mark.service
async def test_cancelled_caller_does_not_break_others(tiny_queue: LocalEmbedder) -> None:
    long_texts = [f"{i} " + "token " * 250 for i in range(6)]
    expected = np.stack([await embed_one(tiny_queue, t) for t in long_texts[:1]])
    first = asyncio.ensure_future(tiny_queue.embed(long_texts, InputType.DOCUMENT, truncate=True))
    await wait_for(lambda: tiny_queue.stats().queue_depth >= 4)
    doomed = asyncio.ensure_future(tiny_queue.embed(["doomed"], InputType.DOCUMENT, truncate=True))
    last = asyncio.ensure_future(tiny_queue.embed(["the last caller"], InputType.DOCUMENT, truncate=True))
    await asyncio.sleep(0.02)  # both are counted and queued behind the first request by now
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed

    result, last_result = await asyncio.gather(first, last)
    np.testing.assert_allclose(result.vectors[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(last_result.vectors[0], await embed_one(tiny_queue, "the last caller"), atol=1e-5)
    assert tiny_queue.stats().queue_depth == 0


@pytest.mark.service
async def test_close_fails_waiting_callers_with_unavailable() -> None:
    e = LocalEmbedder(torch_threads=2, max_batch_size=1)
    await e.start()
    pending = asyncio.ensure_future(
        e.embed([f"{i} " + "token " * 250 for i in range(8)], InputType.DOCUMENT, truncate=True)
    )
    await wait_for(lambda: e.stats().queue_depth > 0)
    await e.close()
    with pytest.raises(Unavailable):
        await pending
    with pytest.raises(Unavailable):
        await e.embed(["after close"], InputType.DOCUMENT, truncate=True)


@pytest.mark.service
async def test_a_model_that_cannot_load_fails_start(tmp_path) -> None:
    e = LocalEmbedder(tmp_path / "no-such-model")
    with pytest.raises(OSError):
        await e.start()
    with pytest.raises(RuntimeError):
        e.info  # noqa: B018 - reading the property is what must raise
    await e.close()


@pytest.mark.service
@pytest.mark.gpu
async def test_cuda_matches_cpu(embedder: LocalEmbedder) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = LocalEmbedder(device="cuda")
    await gpu.start()
    try:
        assert gpu.device is not None and gpu.device.startswith("cuda")
        texts = ["a GPU forward pass", "word " * 300, "short"]
        on_gpu = await gpu.embed(texts, InputType.DOCUMENT, truncate=True)
        on_cpu = await embedder.embed(texts, InputType.DOCUMENT, truncate=True)
        np.testing.assert_allclose(on_gpu.vectors, on_cpu.vectors, atol=1e-3)
        assert on_gpu.token_counts == on_cpu.token_counts
    finally:
        await gpu.close()
