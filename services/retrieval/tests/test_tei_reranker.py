"""TEIReranker against a small HTTP server that speaks TEI's published /rerank API, and against a real TEI if named.

The in-test server implements ``GET /info`` and ``POST /rerank`` as TEI documents them: the request body
``{"query", "texts", "truncate", "raw_scores"}``, the answer ``[{"index", "score"}]`` sorted by score (best first),
``max_client_batch_size`` enforced with 413, an over-long input refused with 413 unless ``truncate``, errors as
``{"error", "error_type"}``, and an optional Bearer API key. Its scores are a word-overlap similarity passed through
a sigmoid: the protocol is what is under test, not the quality.

Set ``LORAG_TEST_TEI_RERANK_URL`` (and ``LORAG_TEST_TEI_RERANK_API_KEY`` if needed) to run the live test against a
real TEI serving a reranker model.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lorag_core.errors import InvalidArgument, ResourceExhausted, Unavailable
from lorag_retrieval.backends import Reranker, TEIReranker


class TEIError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


class FakeTEIReranker:
    """A TEI reranker endpoint in a thread, on a free port."""

    max_input_length = 64  # "tokens" = words here

    def __init__(self, *, max_client_batch_size: int = 4, api_key: str | None = None) -> None:
        self.max_client_batch_size = max_client_batch_size
        self.api_key = api_key
        self.requests: list[tuple[str, str, Any]] = []
        self.failures: list[tuple[int, str, str]] = []  # queued (status, error_type, message) for /rerank
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeTEIReranker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def calls(self, path: str) -> list[Any]:
        return [body for _, p, body in self.requests if p == path]

    def info(self) -> dict[str, Any]:
        return {
            "model_id": "BAAI/bge-reranker-base",
            "model_sha": None,
            "model_dtype": "float16",
            "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
            "max_concurrent_requests": 512,
            "max_input_length": self.max_input_length,
            "max_batch_tokens": 16384,
            "max_batch_requests": None,
            "max_client_batch_size": self.max_client_batch_size,
            "auto_truncate": False,
            "tokenization_workers": 2,
            "version": "1.8.0",
        }

    @staticmethod
    def _words(text: str) -> set[str]:
        return set(re.findall(r"\w+", text.lower()))

    def rerank(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        query, texts = body.get("query"), body.get("texts")
        if not isinstance(query, str) or not isinstance(texts, list):
            raise TEIError(422, "Validation", "Failed to deserialize the JSON body")
        if not texts:
            raise TEIError(400, "Empty", "`texts` cannot be empty")
        if len(texts) > self.max_client_batch_size:
            raise TEIError(
                413, "Validation", f"batch size {len(texts)} > maximum allowed batch size {self.max_client_batch_size}"
            )
        truncate = body.get("truncate", False)
        results = []
        for index, text in enumerate(texts):
            length = len(query.split()) + len(text.split())
            if length > self.max_input_length and not truncate:
                raise TEIError(
                    413, "Validation", f"`inputs` must have less than {self.max_input_length} tokens. Given: {length}"
                )
            q, t = self._words(query), self._words(" ".join(text.split()[: self.max_input_length]))
            raw = 8 * len(q & t) / max(len(q | t), 1) - 2
            score = raw if body.get("raw_scores") else 1 / (1 + math.exp(-raw))
            results.append({"index": index, "score": score})
        return sorted(results, key=lambda r: -r["score"])

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if fake.api_key and self.headers.get("authorization") != f"Bearer {fake.api_key}":
                    self._send(401, {"error": "Unauthorized", "error_type": "Unauthorized"})
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                fake.requests.append(("GET", self.path, None))
                if not self._authorised():
                    return
                if self.path == "/info":
                    self._send(200, fake.info())
                else:
                    self._send(404, {"error": "not found", "error_type": "NotFound"})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"null")
                fake.requests.append(("POST", self.path, body))
                if not self._authorised():
                    return
                if self.path != "/rerank":
                    self._send(404, {"error": "not found", "error_type": "NotFound"})
                    return
                with fake._lock:
                    failure = fake.failures.pop(0) if fake.failures else None
                if failure is not None:
                    self._send(failure[0], {"error": failure[2], "error_type": failure[1]})
                    return
                try:
                    self._send(200, fake.rerank(body))
                except TEIError as exc:
                    self._send(exc.status, {"error": exc.message, "error_type": exc.error_type})

        return Handler


@pytest.fixture
def tei() -> Iterator[FakeTEIReranker]:
    with FakeTEIReranker() as server:
        yield server


PASSAGES = [
    "LoRA trains low-rank adapters on frozen weights.",
    "Paris is the capital of France.",
    "Weaviate runs hybrid search over vectors and BM25.",
    "The capital of France hosts the French government.",
    "Adapters are small.",
    "Berlin is the capital of Germany.",
]


async def test_scores_come_back_in_input_order_across_batches(tei):
    reranker = TEIReranker(tei.url)
    assert isinstance(reranker, Reranker)
    await reranker.start()
    try:
        result = await reranker.rerank("capital of France", PASSAGES, truncate=True)
    finally:
        await reranker.close()
    assert len(result.scores) == len(PASSAGES)
    best = max(range(len(PASSAGES)), key=lambda i: result.scores[i])
    assert best == 1
    assert result.scores[1] > result.scores[5] > result.scores[0]  # France > Germany > LoRA
    assert all(0 < s < 1 for s in result.scores)  # raw_scores false: sigmoid outputs
    assert result.model == "BAAI/bge-reranker-base"  # from /info
    bodies = tei.calls("/rerank")
    # max_client_batch_size from /info: two requests, sent concurrently (so they may arrive in either order)
    assert sorted(b["texts"] for b in bodies) == sorted([PASSAGES[:4], PASSAGES[4:]])
    assert all(b["truncate"] is True and b["raw_scores"] is False and b["query"] == "capital of France" for b in bodies)
    # The second batch's scores are placed at positions 4 and 5 of the whole list, whatever TEI's sort order.
    direct = tei.rerank({"query": "capital of France", "texts": PASSAGES[4:], "truncate": True})
    assert result.scores[4:] == [next(r["score"] for r in direct if r["index"] == i) for i in range(2)]


async def test_start_does_not_need_tei_and_info_failure_falls_back_to_defaults():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reranker = TEIReranker(f"http://127.0.0.1:{port}", model="my-reranker", timeout=2)
    await reranker.start()  # nothing listens there: start succeeds anyway
    with pytest.raises(Unavailable) as failure:
        await reranker.rerank("q", ["a"])
    assert failure.value.metadata["dependency"] == "tei"
    assert reranker.model == "my-reranker" and reranker.max_client_batch_size == 32
    await reranker.close()


async def test_truncate_false_refuses_an_overlong_pair_as_invalid_argument(tei):
    reranker = TEIReranker(tei.url)
    await reranker.start()
    long_passage = "word " * 100
    try:
        ok = await reranker.rerank("q", [long_passage], truncate=True)
        assert len(ok.scores) == 1
        with pytest.raises(InvalidArgument) as failure:
            await reranker.rerank("q", [long_passage], truncate=False)
    finally:
        await reranker.close()
    assert failure.value.violations[0].field == "passages"
    assert "less than 64 tokens" in failure.value.message
    assert failure.value.metadata["http_status"] == "413"


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (429, "Overloaded", ResourceExhausted),
        (424, "Backend", Unavailable),
        (500, "Backend", Unavailable),
        (422, "Tokenizer", InvalidArgument),
    ],
)
async def test_tei_errors_map_to_lorag_errors(tei, status, error_type, expected):
    reranker = TEIReranker(tei.url)
    await reranker.start()
    await reranker.rerank("q", ["warm up /info"])
    tei.failures.append((status, error_type, f"{error_type} trouble"))
    try:
        with pytest.raises(expected) as failure:
            await reranker.rerank("q", ["a"])
    finally:
        await reranker.close()
    assert f"{error_type} trouble" in failure.value.message
    assert failure.value.metadata["tei_error_type"] == error_type.lower()


async def test_api_key_is_sent_as_bearer_token():
    with FakeTEIReranker(api_key="s3cret") as server:
        anonymous = TEIReranker(server.url)
        await anonymous.start()
        with pytest.raises(Unavailable):  # 401 is not the caller's fault: the service is misconfigured
            await anonymous.rerank("q", ["a"])
        await anonymous.close()
        keyed = TEIReranker(server.url, api_key="s3cret")
        await keyed.start()
        assert len((await keyed.rerank("q", ["a", "b"])).scores) == 2
        await keyed.close()


async def test_a_broken_response_is_unavailable(tei):
    reranker = TEIReranker(tei.url)
    await reranker.start()
    tei.rerank = lambda body: [{"index": 7, "score": 0.5}]  # type: ignore[method-assign]
    try:
        with pytest.raises(Unavailable) as failure:
            await reranker.rerank("q", ["a"])
    finally:
        await reranker.close()
    assert failure.value.reason == "DEPENDENCY_PROTOCOL_ERROR"


def test_constructor_checks_its_arguments():
    with pytest.raises(ValueError):
        TEIReranker("tei:8080")
    with pytest.raises(ValueError):
        TEIReranker("http://tei", timeout=0)


@pytest.mark.live
@pytest.mark.skipif(not os.environ.get("LORAG_TEST_TEI_RERANK_URL"), reason="LORAG_TEST_TEI_RERANK_URL names no TEI")
async def test_live_tei_rerank():
    reranker = TEIReranker(
        os.environ["LORAG_TEST_TEI_RERANK_URL"], api_key=os.environ.get("LORAG_TEST_TEI_RERANK_API_KEY"), timeout=60
    )
    await reranker.start()
    try:
        passages = [
            "Paris is the capital of France.",
            "LoRA adapts large models cheaply.",
            *[f"filler {i}" for i in range(40)],
        ]
        result = await reranker.rerank("What is the capital of France?", passages)
    finally:
        await reranker.close()
    assert len(result.scores) == len(passages)
    assert max(range(len(passages)), key=lambda i: result.scores[i]) == 0
    assert result.model
