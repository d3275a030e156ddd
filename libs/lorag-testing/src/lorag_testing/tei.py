"""Fake Text Embeddings Inference (TEI) servers for the tests of lorag's TEI clients, on pytest-httpserver.

They speak TEI's published HTTP API as its documentation and router give it: ``GET /info``; ``POST /embed`` and
``POST /tokenize`` (:class:`FakeTEIEmbedder`, computing with a real sentence-transformers model, so its answers are
the ones a TEI serving that model gives); ``POST /rerank`` (:class:`FakeTEIReranker`, scoring by word overlap: the
protocol is under test there, not the quality). Errors are ``{"error", "error_type"}`` bodies with TEI's statuses;
an optional Bearer API key is enforced as ``--api-key`` does. A test can queue failures per route
(:meth:`FakeTEI.fail`), delay every answer (:attr:`FakeTEI.delay`), and read what was sent (:attr:`FakeTEI.requests`).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, Self

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

Route = Callable[[Any], Any]


class TEIError(Exception):
    """An error answer: the HTTP status and TEI's ``error_type`` (Empty, Validation, Tokenizer, Backend, ...)."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


class Recorded(NamedTuple):
    """One request as the fake received it: headers with lower-case names, the JSON body (``None`` for a GET)."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]


class FakeTEI:
    """A TEI-shaped HTTP server in a thread on a free port; subclasses add the model's routes with :meth:`route`.

    Use it as a context manager (or :meth:`start` / :meth:`stop`). Requests are served concurrently over HTTP/1.1
    keep-alive, as TEI (hyper) serves them.
    """

    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.delay = 0.0
        """Seconds every answer waits before it is sent (cut short when the server stops)."""
        self._failures: dict[str, list[TEIError]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = False
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    def start(self) -> Self:
        if not self._started:  # the catch-all comes after every route
            self.server.expect_request(re.compile(".*")).respond_with_handler(self._not_found)
            self._started = True
        self._stopping.clear()
        self.server.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use ----------------------------------------------------------------------------------------------

    def calls(self, path: str) -> list[Any]:
        """The JSON bodies sent to ``path``, in arrival order."""
        return [r.body for r in self.requests if r.path == path]

    def fail(self, path: str, status: int, error_type: str, message: str) -> None:
        """Answer the next request to ``path`` with this TEI error instead of serving it."""
        with self._lock:
            self._failures.setdefault(path, []).append(TEIError(status, error_type, message))

    def reset(self) -> None:
        """Forget recorded requests and queued failures."""
        with self._lock:
            self.requests.clear()
            self._failures.clear()

    def route(self, method: str, path: str, name: str) -> None:
        """Serve ``method path`` with this object's method ``name`` (looked up per request, so a test may replace it):
        it receives the JSON body (nothing for a GET) and returns the JSON answer, or raises :class:`TEIError`."""

        def handler(request: Request) -> Response:
            served: Callable[..., Any] = getattr(self, name)
            return self._serve(request, lambda body: served(body) if method == "POST" else served())

        self.server.expect_request(path, method=method).respond_with_handler(handler)

    # -- serving -----------------------------------------------------------------------------------------------------

    def _serve(self, request: Request, route: Route | None) -> Response:
        body = json.loads(request.get_data() or b"null") if request.method == "POST" else None
        self.requests.append(Recorded(request.method, request.path, body, {k.lower(): v for k, v in request.headers}))
        if self.delay:
            self._stopping.wait(self.delay)
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _reply(401, {"error": "Unauthorized", "error_type": "Unauthorized"})
        if route is None:
            return _reply(404, {"error": "not found", "error_type": "NotFound"})
        with self._lock:
            queued = self._failures.get(request.path)
            failure = queued.pop(0) if queued else None
        try:
            if failure is not None:
                raise failure
            return _reply(200, route(body))
        except TEIError as err:
            return _reply(err.status, {"error": err.message, "error_type": err.error_type})

    def _not_found(self, request: Request) -> Response:
        return self._serve(request, None)


def _reply(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _batch_limit(size: int, limit: int) -> None:
    if size > limit:
        raise TEIError(413, "Validation", f"batch size {size} > maximum allowed batch size {limit}")


def _too_long(length: int, limit: int) -> TEIError:
    return TEIError(413, "Validation", f"`inputs` must have less than {limit} tokens. Given: {length}")


class FakeTEIEmbedder(FakeTEI):
    """TEI serving an embedding model: ``/info``, ``/embed`` and ``/tokenize``, computed with ``model`` (a
    sentence-transformers ``SentenceTransformer``), without ``--auto-truncate``. ``prompts`` are TEI's named prompts
    (``prompt_name`` → the text put before each input)."""

    def __init__(
        self,
        model: Any,
        *,
        model_id: str = "sentence-transformers/all-MiniLM-L6-v2",
        prompts: dict[str, str] | None = None,
        max_client_batch_size: int = 8,
        api_key: str | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        super().__init__(api_key=api_key)
        self.model = model
        self.model_id = model_id
        self.prompts = prompts or {}
        self.max_client_batch_size = max_client_batch_size
        self.max_input_length = int(model.max_seq_length)
        # TEI counts and cuts with the model's own tokenizer, untruncated and unpadded.
        self._tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._model_lock = threading.Lock()  # one model, one tokenizer: TEI's own queue serialises them too
        self.route("GET", "/info", "info")
        self.route("POST", "/embed", "embed")
        self.route("POST", "/tokenize", "tokenize")

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
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
        _batch_limit(len(batch), self.max_client_batch_size)
        prompt_name = body.get("prompt_name")
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise TEIError(413, "Validation", f"Prompt name `{prompt_name}` not found in the configuration")
            batch = [self.prompts[prompt_name] + text for text in batch]
        return batch

    def tokenize(self, body: dict[str, Any]) -> list[list[dict[str, Any]]]:
        batch = self._inputs(body)
        with self._model_lock:
            encodings = self._tokenizer.encode_batch(batch, add_special_tokens=body.get("add_special_tokens", True))
        return [
            [
                {"id": i, "text": tok, "special": bool(s), "start": None if s else a, "stop": None if s else b}
                for i, tok, s, (a, b) in zip(e.ids, e.tokens, e.special_tokens_mask, e.offsets, strict=True)
            ]
            for e in encodings
        ]

    def embed(self, body: dict[str, Any]) -> list[list[float]]:
        batch = self._inputs(body)
        truncate = bool(body.get("truncate") or False)  # this server runs without --auto-truncate
        with self._model_lock:
            for encoding in self._tokenizer.encode_batch(batch):
                if len(encoding) > self.max_input_length and not truncate:
                    raise _too_long(len(encoding), self.max_input_length)
            vectors = self.model.encode(batch, normalize_embeddings=bool(body.get("normalize", True)))
        return list(vectors.tolist())


class FakeTEIReranker(FakeTEI):
    """TEI serving a reranker: ``/info`` and ``/rerank``. Its "tokens" are words, at most ``max_input_length`` per
    (query, text) pair; a score is the pair's word overlap through a sigmoid (raw with ``raw_scores``)."""

    max_input_length = 64

    def __init__(
        self, *, model_id: str = "BAAI/bge-reranker-base", max_client_batch_size: int = 4, api_key: str | None = None
    ) -> None:
        super().__init__(api_key=api_key)
        self.model_id = model_id
        self.max_client_batch_size = max_client_batch_size
        self.route("GET", "/info", "info")
        self.route("POST", "/rerank", "rerank")

    def info(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
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

    def rerank(self, body: Any) -> list[dict[str, Any]]:
        """TEI's answer: ``[{"index", "score"}]``, best first."""
        query, texts = (body.get("query"), body.get("texts")) if isinstance(body, dict) else (None, None)
        if not isinstance(query, str) or not isinstance(texts, list):
            raise TEIError(422, "Validation", "Failed to deserialize the JSON body")
        if not texts:
            raise TEIError(400, "Empty", "`texts` cannot be empty")
        _batch_limit(len(texts), self.max_client_batch_size)
        results = []
        for index, text in enumerate(texts):
            length = len(query.split()) + len(text.split())
            if length > self.max_input_length and not body.get("truncate", False):
                raise _too_long(length, self.max_input_length)
            q, t = self._words(query), self._words(" ".join(text.split()[: self.max_input_length]))
            raw = 8 * len(q & t) / max(len(q | t), 1) - 2
            score = raw if body.get("raw_scores") else 1 / (1 + math.exp(-raw))
            results.append({"index": index, "score": score})
        return sorted(results, key=lambda r: -r["score"])


__all__ = ["FakeTEI", "FakeTEIEmbedder", "FakeTEIReranker", "Recorded", "TEIError"]
