"""TEIEmbedder against a small HTTP server that speaks TEI's published API, and against a real TEI when one is named.

The in-test server implements ``GET /info``, ``POST /embed`` and ``POST /tokenize`` as TEI documents them (payloads,
status codes, ``{"error", "error_type"}`` bodies, Bearer API key), computing vectors and tokens with the real packaged
all-MiniLM-L6-v2, so its answers are the ones a TEI serving that model gives. Tests can queue error responses on it.

Set ``LORAG_TEST_TEI_URL`` (and ``LORAG_TEST_TEI_API_KEY`` if the server has one) to run the live test.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from lorag_core.errors import InvalidArgument, ResourceExhausted, Unavailable
from lorag_embedding.backends import Embedder, InputType, TEIEmbedder, default_model_path


class FakeTEI:
    """A TEI HTTP server in a thread, on a free port, serving all-MiniLM-L6-v2."""

    def __init__(
        self,
        model: Any,
        *,
        prompts: dict[str, str] | None = None,
        max_client_batch_size: int = 8,
        api_key: str | None = None,
    ) -> None:
        self.model = model
        self.prompts = prompts or {}
        self.max_client_batch_size = max_client_batch_size
        self.max_input_length = model.max_seq_length
        self.api_key = api_key
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []  # method, path, body, headers
        self.failures: list[tuple[int, str, str]] = []  # queued (status, error_type, message) for /embed
        self._lock = threading.Lock()  # one model, one tokenizer: TEI's own queue serialises them too
        self._tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeTEI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def calls(self, path: str) -> list[Any]:
        return [body for _, p, body, _ in self.requests if p == path]

    # -- TEI semantics -------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "model_id": "sentence-transformers/all-MiniLM-L6-v2",
            "model_sha": None,
            "model_dtype": "float32",
            "model_type": {"embedding": {"pooling": "mean"}},
            "max_concurrent_requests": 512,
            "max_input_length": self.max_input_length,
            "max_batch_tokens": 16384,
            "max_batch_requests": None,
            "max_client_batch_size": self.max_client_batch_size,
            "auto_truncate": False,
            "tokenization_workers": 2,
            "version": "1.8.0",
            "sha": None,
            "docker_label": None,
        }

    def _inputs(self, body: dict[str, Any]) -> list[str]:
        inputs = body.get("inputs")
        batch = [inputs] if isinstance(inputs, str) else list(inputs or [])
        if not batch:
            raise TEIError(400, "Empty", "`inputs` cannot be empty")
        if len(batch) > self.max_client_batch_size:
            raise TEIError(
                413,
                "Validation",
                f"batch size {len(batch)} > maximum allowed batch size {self.max_client_batch_size}",
            )
        prompt_name = body.get("prompt_name")
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise TEIError(413, "Validation", f"Prompt name `{prompt_name}` not found in the configuration")
            batch = [self.prompts[prompt_name] + text for text in batch]
        return batch

    def tokenize(self, body: dict[str, Any]) -> list[list[dict[str, Any]]]:
        batch = self._inputs(body)
        with self._lock:
            encodings = self._tokenizer.encode_batch(batch, add_special_tokens=body.get("add_special_tokens", True))
        return [
            [
                {"id": i, "text": tok, "special": bool(s), "start": None if s else a, "stop": None if s else b}
                for i, tok, s, (a, b) in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets, strict=True)
            ]
            for e in encodings
        ]

    def embed(self, body: dict[str, Any]) -> list[list[float]]:
        if self.failures:
            raise TEIError(*self.failures.pop(0))
        batch = self._inputs(body)
        truncate = body.get("truncate")
        truncate = False if truncate is None else truncate  # this server runs without --auto-truncate
        with self._lock:
            for encoding in self._tokenizer.encode_batch(batch):
                if len(encoding) > self.max_input_length and not truncate:
                    raise TEIError(
                        413,
                        "Validation",
                        f"`inputs` must have less than {self.max_input_length} tokens. Given: {len(encoding)}",
                    )
            vectors = self.model.encode(batch, normalize_embeddings=bool(body.get("normalize", True)))
        return vectors.tolist()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tei = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as TEI (hyper) serves

            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str, route: Any) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                tei.requests.append((method, self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                if tei.api_key and self.headers.get("Authorization") != f"Bearer {tei.api_key}":
                    self._reply(401, {"error": "Unauthorized", "error_type": "Unauthorized"})
                    return
                if route is None:
                    self._reply(404, {"error": "not found", "error_type": "NotFound"})
                    return
                try:
                    self._reply(200, route(body) if method == "POST" else route())
                except TEIError as err:
                    self._reply(err.status, {"error": err.message, "error_type": err.error_type})

            def do_GET(self) -> None:
                self._serve("GET", {"/info": tei.info}.get(self.path))

            def do_POST(self) -> None:
                self._serve("POST", {"/embed": tei.embed, "/tokenize": tei.tokenize}.get(self.path))

        return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many concurrent callers, as against a real TEI


class TEIError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


@pytest.fixture(scope="module")
def model() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_model_path()), device="cpu")


@pytest.fixture(scope="module")
def tei(model: Any) -> Iterator[FakeTEI]:
    with FakeTEI(model, prompts={"query": "query: "}) as server:
        yield server


@pytest.fixture
async def embedder(tei: FakeTEI) -> AsyncIterator[TEIEmbedder]:
    e = TEIEmbedder(tei.url, timeout=10)
    await e.start()
    tei.requests.clear()
    tei.failures.clear()
    yield e
    await e.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_start_reads_info_prompts_and_dimensions(embedder: TEIEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    info = embedder.info
    assert info.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert info.backend == "tei"
    assert info.dimensions == 384
    assert info.max_input_tokens == 256
    assert info.max_client_batch_size == 8
    assert info.max_batch_tokens == 16384
    assert info.normalized is True
    assert info.prompts == {"query": ""}  # TEI accepted "query" and refused "document"


async def test_embeds_a_batch_in_one_call(embedder: TEIEmbedder, tei: FakeTEI, model: Any) -> None:
    texts = ["hello world", "The quick brown fox.", "LoRA adapters are small.", "word " * 50, "bread"]
    result = await embedder.embed(texts, InputType.DOCUMENT, truncate=True)

    (call,) = tei.calls("/embed")
    assert call == {"inputs": texts, "normalize": True, "truncate": True}
    assert result.vectors.shape == (5, 384) and result.vectors.dtype == np.float32
    np.testing.assert_allclose(result.vectors, model.encode(texts, normalize_embeddings=True), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    assert result.token_counts == [4, 7, len(model.tokenizer("LoRA adapters are small.")["input_ids"]), 52, 3]
    assert result.truncated == [False] * 5
    assert result.inference_ns > 0 and result.queue_ns >= 0


async def test_query_prompt_is_sent_by_name(embedder: TEIEmbedder, tei: FakeTEI, model: Any) -> None:
    query = await embedder.embed(["how do I bake bread"], InputType.QUERY, truncate=True)
    document = await embedder.embed(["how do I bake bread"], InputType.DOCUMENT, truncate=True)
    first, second = tei.calls("/embed")
    assert first["prompt_name"] == "query" and "prompt_name" not in second
    assert query.token_counts[0] == document.token_counts[0] + 2  # "query" ":"
    np.testing.assert_allclose(
        query.vectors[0], model.encode("query: how do I bake bread", normalize_embeddings=True), atol=1e-5
    )


async def test_truncation_both_ways(embedder: TEIEmbedder, tei: FakeTEI) -> None:
    long_text = "word " * 400
    result = await embedder.embed(["short", long_text], InputType.DOCUMENT, truncate=True)
    assert result.token_counts == [3, 256] and result.truncated == [False, True]

    tei.requests.clear()
    with pytest.raises(InvalidArgument) as refused:
        await embedder.embed(["short", long_text], InputType.DOCUMENT, truncate=False)
    assert [v.field for v in refused.value.violations] == ["texts[1]"]
    assert "402 tokens" in refused.value.violations[0].description
    assert tei.calls("/embed") == []  # refused before costing TEI an embedding


async def test_shared_request_rules(embedder: TEIEmbedder, tei: FakeTEI) -> None:
    with pytest.raises(InvalidArgument) as empty:
        await embedder.embed([], InputType.QUERY, truncate=True)
    assert [v.field for v in empty.value.violations] == ["texts"]
    with pytest.raises(InvalidArgument) as blank:
        await embedder.embed(["ok", " "], InputType.QUERY, truncate=True)
    assert [v.field for v in blank.value.violations] == ["texts[1]"]
    with pytest.raises(InvalidArgument) as too_many:
        await embedder.embed(["x"] * 9, InputType.QUERY, truncate=True)  # TEI's max_client_batch_size is 8
    assert "8" in too_many.value.violations[0].description
    assert tei.requests == []


async def test_service_limit_can_lower_teis_batch_limit(tei: FakeTEI) -> None:
    e = TEIEmbedder(tei.url, max_client_batch_size=3)
    await e.start()
    assert e.info.max_client_batch_size == 3
    with pytest.raises(InvalidArgument):
        await e.embed(["a", "b", "c", "d"], InputType.DOCUMENT, truncate=True)
    await e.close()
    e = TEIEmbedder(tei.url, max_client_batch_size=1000)
    await e.start()
    assert e.info.max_client_batch_size == 8  # TEI's own limit stands
    await e.close()


async def test_concurrent_callers(embedder: TEIEmbedder, model: Any) -> None:
    texts = [f"caller {i} writes about subject {i % 5}" for i in range(24)]
    results = await asyncio.gather(*(embedder.embed([t], InputType.DOCUMENT, truncate=True) for t in texts))
    expected = model.encode(texts, normalize_embeddings=True)
    for i, result in enumerate(results):
        np.testing.assert_allclose(result.vectors[0], expected[i], atol=1e-5)


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (429, "Overloaded", ResourceExhausted),
        (422, "Tokenizer", InvalidArgument),
        (413, "Validation", InvalidArgument),
        (400, "Empty", InvalidArgument),
        (424, "Backend", Unavailable),
        (503, "Unhealthy", Unavailable),
        (500, "Backend", Unavailable),
    ],
)
async def test_tei_errors_are_mapped(
    embedder: TEIEmbedder, tei: FakeTEI, status: int, error_type: str, expected: type[Exception]
) -> None:
    tei.failures.append((status, error_type, f"injected {error_type.lower()} failure"))
    with pytest.raises(expected) as raised:
        await embedder.embed(["hello"], InputType.DOCUMENT, truncate=True)
    error = raised.value
    assert error.metadata["http_status"] == str(status)
    assert error.metadata["tei_error_type"] == error_type.lower()
    assert "injected" in error.message
    if expected is InvalidArgument:
        assert [v.field for v in error.violations] == ["texts"]
    # The next call goes through.
    assert (await embedder.embed(["hello"], InputType.DOCUMENT, truncate=True)).vectors.shape == (1, 384)


async def test_server_down_is_unavailable(model: Any) -> None:
    with pytest.raises(Unavailable) as at_start:
        await TEIEmbedder(f"http://127.0.0.1:{free_port()}", timeout=5).start()
    assert at_start.value.metadata["dependency"] == "tei"

    server = FakeTEI(model).__enter__()
    e = TEIEmbedder(server.url, timeout=5)
    await e.start()
    server.__exit__()
    with pytest.raises(Unavailable):
        await e.embed(["anyone there?"], InputType.DOCUMENT, truncate=True)
    await e.close()
    with pytest.raises(Unavailable):
        await e.embed(["after close"], InputType.DOCUMENT, truncate=True)


async def test_unresponsive_server_times_out_as_unavailable() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        with pytest.raises(Unavailable) as raised:
            await TEIEmbedder(f"http://127.0.0.1:{port}", timeout=0.3).start()
    assert raised.value.reason == "DEPENDENCY_TIMEOUT"


async def test_api_key_is_sent_and_no_other_token_leaks(model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_saved_hub_token_must_not_leak")
    with FakeTEI(model, api_key="s3cret") as server:
        with pytest.raises(Unavailable) as refused:
            await TEIEmbedder(server.url, timeout=5).start()
        assert refused.value.metadata["http_status"] == "401"
        assert all("authorization" not in headers for _, _, _, headers in server.requests)

        server.requests.clear()
        e = TEIEmbedder(server.url, api_key="s3cret", timeout=5)
        await e.start()
        result = await e.embed(["with a key"], InputType.DOCUMENT, truncate=True)
        assert result.vectors.shape == (1, 384)
        assert {headers.get("authorization") for _, _, _, headers in server.requests} == {"Bearer s3cret"}
        await e.close()


async def test_works_in_hub_offline_mode(tei: FakeTEI, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 blocks huggingface_hub's own sessions; a self-hosted TEI must still be reachable."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    e = TEIEmbedder(tei.url, timeout=5)
    await e.start()
    assert (await e.embed(["offline deployments still embed"], InputType.QUERY, truncate=True)).vectors.shape == (
        1,
        384,
    )
    await e.close()


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("LORAG_TEST_TEI_URL"), reason="set LORAG_TEST_TEI_URL to test a real TEI")
async def test_live_tei() -> None:
    e = TEIEmbedder(
        os.environ["LORAG_TEST_TEI_URL"], api_key=os.environ.get("LORAG_TEST_TEI_API_KEY") or None, timeout=30
    )
    await e.start()
    try:
        info = e.info
        assert info.dimensions > 0 and info.max_input_tokens > 0 and info.max_client_batch_size > 0
        texts = [
            "How do I bake bread at home?",
            "A simple recipe for homemade bread baked in your oven.",
            "The central bank raised interest rates.",
        ]
        result = await e.embed(texts, InputType.DOCUMENT, truncate=True)
        assert result.vectors.shape == (3, info.dimensions)
        np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-3)
        scores = result.vectors[1:] @ result.vectors[0]
        assert scores[0] > scores[1]
        assert all(n > 0 for n in result.token_counts)

        long_text = "word " * (info.max_input_tokens + 10)
        cut = await e.embed([long_text], InputType.QUERY, truncate=True)
        assert cut.truncated == [True] and cut.token_counts == [info.max_input_tokens]
        with pytest.raises(InvalidArgument):
            await e.embed([long_text], InputType.QUERY, truncate=False)
    finally:
        await e.close()
