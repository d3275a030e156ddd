"""A fake OpenAI-protocol server that answers the way vLLM serves, for the tests of the generation service's openai
backend; on pytest-httpserver (werkzeug, a thread per request, token streams as werkzeug responses over generators).

It is not a model: its answers are derived from the request so tests can assert exact values. The text a model
"continues" is the prompt (``/v1/completions``) or the last user message (``/v1/chat/completions``), split on ``|``
into tokens; the base model answers with those tokens as they are, an adapter model (a LoRA module loaded through
``/v1/load_lora_adapter``) with ``<name>`` followed by the tokens upper-cased. So ``"Hel|lo| wor|ld"`` streams four
chunks, ``"Hel"``, ``"lo"``, ``" wor"``, ``"ld"``, and a stop string can be placed across two chunks at will.

What it reproduces of vLLM (``vllm/entrypoints/openai``), each switchable to imitate other servers:

* SSE ``data: {...}\\n\\n`` chunks ending with ``data: [DONE]``; ``chat.completion.chunk`` (a first chunk with the
  assistant role and empty content) and ``text_completion`` objects; the finish reason rides on the last token's
  chunk; with ``stream_options.include_usage`` a final chunk with ``choices: []`` and the usage (``send_usage``).
* Stop strings applied on the server (``honour_stop``): the text is cut before the stop string, the tail that could
  start one is held back while streaming (vLLM's ``stop_buffer_length``), and the finish is ``"stop"`` with the
  string as ``stop_reason``; an end of text is ``"stop"`` with ``stop_reason`` null; ``max_tokens`` is ``"length"``.
* ``GET /v1/models`` with ``max_model_len`` on the base model and a card per LoRA module (``root`` = its path,
  ``parent`` = the base model); ``POST /tokenize`` returning ``count``; ``/v1/load_lora_adapter`` and
  ``/v1/unload_lora_adapter`` with vLLM's answers (plain-text success, "has already been loaded" as a 400, an
  unknown adapter as a 404). ``vllm_extensions=False`` drops all of these, as a plain OpenAI-compatible server
  would: they answer 404 like any unknown route, with no error object.
* Errors as vLLM's ``ErrorResponse`` JSON: 400 for a prompt over ``max_model_len`` (vLLM's wording), 404 for an
  unknown model. A text starting with ``!status=NNN`` answers that status with OpenAI's nested error body (to
  exercise 429 and 5xx); ``!midfail|...`` streams two of the following tokens then an error event
  (``!midfail=flat``: vLLM's flat form); ``!slow`` streams 500 tokens slowly, so a test can watch the server
  see a disconnect.

Every request is recorded in ``requests`` as ``(path, json body)``; ``disconnects`` counts streams the client left
(werkzeug closes a stream's generator when writing to a departed client fails, which is where it is counted), and
``disconnected`` is set at each.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

SLOW_TOKENS = 500
CHAT_TOKENS_PER_MESSAGE = 2  # role markers the fake "chat template" adds per message
CHAT_GENERATION_PROMPT_TOKENS = 1
SLOW_TOKEN_DELAY_S = 0.01


def pieces(text: str) -> list[str]:
    """The fake tokenizer: ``|`` separates tokens."""
    return [piece for piece in text.split("|") if piece]


class OpenAIProtocolServer:
    """Use as a context manager (or :meth:`start` / :meth:`stop`); ``base_url`` is the OpenAI base
    (``http://127.0.0.1:<port>/v1``)."""

    def __init__(
        self,
        *,
        model: str = "HuggingFaceTB/SmolLM2-135M-Instruct",
        max_model_len: int = 512,
        max_lora_rank: int = 16,
        honour_stop: bool = True,
        send_usage: bool = True,
        vllm_extensions: bool = True,
        token_delay_s: float = 0.0,
    ) -> None:
        self.model = model
        self.max_model_len = max_model_len
        self.max_lora_rank = max_lora_rank
        self.honour_stop = honour_stop
        self.send_usage = send_usage
        self.vllm_extensions = vllm_extensions
        self.token_delay_s = token_delay_s  # pause between tokens of ordinary answers
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.loras: dict[str, str] = {}  # LoRA module name -> path
        self.disconnects = 0
        self.slow_tokens_sent = 0
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self._route("GET", "/v1/models", self._models)
        self._route("POST", "/v1/completions", self._completions)
        self._route("POST", "/v1/chat/completions", self._chat)
        if vllm_extensions:
            self._route("POST", "/tokenize", self._tokenize)
            self._route("POST", "/v1/load_lora_adapter", self._load_lora)
            self._route("POST", "/v1/unload_lora_adapter", self._unload_lora)
        # Anything else is a route the server does not have: the web framework's 404, with no error object.
        self.server.expect_request(re.compile(".*")).respond_with_json({"detail": "Not Found"}, status=404)

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.server.host}:{self.server.port}/v1"

    def start(self) -> OpenAIProtocolServer:
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop listening (new connections are refused); streams still running end when their client leaves."""
        if self.server.is_running():
            self.server.stop()

    def __enter__(self) -> OpenAIProtocolServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies received on ``path``, oldest first."""
        return [body for p, body in self.requests if p == path]

    # -- routes ------------------------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, handler: Any) -> None:
        self.server.expect_request(path, method=method).respond_with_handler(handler)

    def _models(self, request: Request) -> Response:
        created = int(time.time())
        base: dict[str, Any] = {"id": self.model, "object": "model", "created": created, "owned_by": "vllm"}
        data = [base]
        if self.vllm_extensions:
            base.update(root=self.model, parent=None, max_model_len=self.max_model_len)
            data += [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": "vllm",
                    "root": path,
                    "parent": self.model,
                    "max_model_len": None,
                }
                for name, path in self.loras.items()
            ]
        return _json({"object": "list", "data": data})

    def _tokenize(self, request: Request) -> Response:
        body = self._record(request)
        model_error = self._check_model(body)
        if model_error is not None:
            return model_error
        count = self._prompt_tokens(body)
        answer = {"count": count, "max_model_len": self.max_model_len, "tokens": list(range(count)), "token_strs": None}
        return _json(answer)

    def _load_lora(self, request: Request) -> Response:
        body = self._record(request)
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error(400, "Both 'lora_name' and 'lora_path' must be provided.", "BadRequestError")
        if name in self.loras:
            return _error(400, f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput")
        config = Path(path) / "adapter_config.json"
        if not config.is_file():
            return _error(404, f"No adapter found for {path}", "NotFoundError")
        rank = int(json.loads(config.read_text()).get("r", 8))
        if rank > self.max_lora_rank:
            return _error(
                400, f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.", "BadRequestError"
            )
        self.loras[name] = path
        return Response(f"Success: LoRA adapter '{name}' added successfully.", content_type="text/plain")

    def _unload_lora(self, request: Request) -> Response:
        body = self._record(request)
        name = body.get("lora_name")
        if name not in self.loras:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del self.loras[name]
        return Response(f"Success: LoRA adapter '{name}' removed successfully.", content_type="text/plain")

    def _completions(self, request: Request) -> Response:
        body = self._record(request)
        return self._generate(body, str(body.get("prompt", "")), chat=False)

    def _chat(self, request: Request) -> Response:
        body = self._record(request)
        users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        return self._generate(body, users[-1] if users else "", chat=True)

    # -- generation --------------------------------------------------------------------------------------------------

    def _generate(self, body: dict[str, Any], text: str, *, chat: bool) -> Response:
        """Refuse the request as vLLM would, or answer it with a token stream."""
        if text.startswith("!status="):
            status = int(text[len("!status=") : len("!status=") + 3])
            return _error(status, f"simulated status {status}", "SimulatedError", nested=True)
        model_error = self._check_model(body)
        if model_error is not None:
            return model_error
        prompt_tokens = self._prompt_tokens(body)
        max_tokens = int(body.get("max_tokens") or 16)
        if self.vllm_extensions and prompt_tokens + max_tokens > self.max_model_len:
            what = "messages" if chat else "prompt"
            return _error(
                400,
                f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {what}, {max_tokens} in the "
                "completion). Please reduce the length of the messages or completion.",
                "BadRequestError",
            )
        if body.get("stream") is not True:
            return _error(400, "this test server only streams", "BadRequestError")
        events = self._events(body, text, chat=chat, prompt_tokens=prompt_tokens, max_tokens=max_tokens)
        return Response(events, content_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def _events(
        self, body: dict[str, Any], text: str, *, chat: bool, prompt_tokens: int, max_tokens: int
    ) -> Iterator[bytes]:
        """The SSE events of one answer. werkzeug closes this generator when a write to the client fails: the
        ``GeneratorExit`` at a ``yield`` is how the server sees a client that went away."""
        slow = text.startswith("!slow")
        fail_after = 2 if text.startswith("!midfail") else None
        model = body["model"]
        tokens = [" tick"] * SLOW_TOKENS if slow else pieces(text)[1 if fail_after else 0 :]
        if model != self.model:
            tokens = [f"<{model}>"] + [t.upper() for t in tokens]
        stops = [s for s in (body.get("stop") or []) if s] if self.honour_stop else []
        hold = max((len(s) for s in stops), default=1) - 1
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{len(self.requests)}"
        created = int(time.time())

        def chunk(piece: str | None, finish: str | None = None, stop_reason: str | None = None) -> dict[str, Any]:
            if chat:
                delta: dict[str, Any] = {} if piece is None else {"content": piece}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
                obj = "text_completion"
            if self.vllm_extensions:
                choice["stop_reason"] = stop_reason
            return {"id": ident, "object": obj, "created": created, "model": model, "choices": [choice]}

        try:
            if chat:
                first = chunk("")
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                yield _event(first)
            produced, sent, generated = "", 0, 0
            finish: str = "stop"
            for index, token in enumerate(tokens):
                if generated == max_tokens:
                    finish = "length"
                    break
                if fail_after is not None and generated == fail_after:
                    error: dict[str, Any] = {
                        "object": "error",
                        "message": "simulated engine failure",
                        "type": "InternalServerError",
                        "param": None,
                        "code": 500,
                    }
                    yield _event(error if text.startswith("!midfail=flat") else {"error": error})
                    yield _event("[DONE]")
                    return
                if slow or self.token_delay_s:
                    time.sleep(self.token_delay_s or SLOW_TOKEN_DELAY_S)
                generated += 1
                if slow:
                    with self._lock:
                        self.slow_tokens_sent += 1
                produced += token
                matched = _first_stop(produced, stops)
                last = index == len(tokens) - 1 or generated == max_tokens
                if matched is not None:
                    produced = produced[: produced.index(matched)]
                    yield _event(chunk(produced[sent:], "stop", matched))
                    break
                if last:
                    finish = "length" if generated == max_tokens else "stop"  # EOS comes after the last piece
                    yield _event(chunk(produced[sent:], finish))
                    break
                visible = len(produced) - hold if stops else len(produced)
                if visible > sent:
                    yield _event(chunk(produced[sent:visible]))
                    sent = visible
            else:
                yield _event(chunk("" if not chat else None, finish))  # no tokens at all
            if self.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": generated}
                usage["total_tokens"] = prompt_tokens + generated
                obj = "chat.completion.chunk" if chat else "text_completion"
                yield _event(
                    {"id": ident, "object": obj, "created": created, "model": model, "choices": [], "usage": usage}
                )
            yield _event("[DONE]")
        except GeneratorExit:
            with self._lock:
                self.disconnects += 1
            self.disconnected.set()
            raise

    # -- helpers -----------------------------------------------------------------------------------------------------

    def _record(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(request.get_data() or b"{}")
        self.requests.append((request.path, body))
        return body

    def _check_model(self, body: dict[str, Any]) -> Response | None:
        model = body.get("model")
        if model == self.model or model in self.loras:
            return None
        return _error(404, f"The model `{model}` does not exist.", "NotFoundError", param="model")

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        if "messages" in body:
            per_message = [len(pieces(m.get("content", ""))) + CHAT_TOKENS_PER_MESSAGE for m in body["messages"]]
            return sum(per_message) + CHAT_GENERATION_PROMPT_TOKENS
        return len(pieces(str(body.get("prompt", ""))))


def _event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def _first_stop(text: str, stops: list[str]) -> str | None:
    found = [(text.find(s), s) for s in stops if s in text]
    return min(found)[1] if found else None


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type="application/json")


def _error(status: int, message: str, err_type: str, param: str | None = None, *, nested: bool = False) -> Response:
    """vLLM's ErrorResponse body: flat (older vLLM) or nested under "error" (OpenAI and newer vLLM)."""
    error = {"object": "error", "message": message, "type": err_type, "param": param, "code": status}
    return _json({"error": error} if nested else error, status)


__all__ = ["SLOW_TOKENS", "OpenAIProtocolServer", "pieces"]
