"""A small HTTP server that speaks the published OpenAI protocol the way vLLM serves it, for the openai backend's tests.

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
  unknown adapter as a 404). ``vllm_extensions=False`` drops all of these, as a plain OpenAI-compatible server would.
* Errors as vLLM's ``ErrorResponse`` JSON: 400 for a prompt over ``max_model_len`` (vLLM's wording), 404 for an
  unknown model. A text starting with ``!status=NNN`` answers that status with OpenAI's nested error body (to
  exercise 429 and 5xx); ``!midfail|...`` streams two of the following tokens then an error event
  (``!midfail=flat``: vLLM's flat form); ``!slow`` streams 500 tokens slowly, so a test can watch the server
  see a disconnect.

Every request is recorded in ``requests`` as ``(path, json body)``; ``disconnects`` counts streams the client left.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

SLOW_TOKENS = 500
CHAT_TOKENS_PER_MESSAGE = 2  # role markers the fake "chat template" adds per message
CHAT_GENERATION_PROMPT_TOKENS = 1


def pieces(text: str) -> list[str]:
    """The fake tokenizer: ``|`` separates tokens."""
    return [piece for piece in text.split("|") if piece]


@dataclass
class OpenAIProtocolServer:
    """Start with ``await server.start()``; ``base_url`` is the OpenAI base (``http://127.0.0.1:<port>/v1``)."""

    model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    max_model_len: int = 512
    max_lora_rank: int = 16
    honour_stop: bool = True
    send_usage: bool = True
    vllm_extensions: bool = True
    token_delay_s: float = 0.0  # pause between tokens of ordinary answers
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    loras: dict[str, str] = field(default_factory=dict)  # LoRA module name -> path
    disconnects: int = 0
    slow_tokens_sent: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> OpenAIProtocolServer:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        if self.vllm_extensions:
            app.router.add_post("/tokenize", self._tokenize)
            app.router.add_post("/v1/load_lora_adapter", self._load_lora)
            app.router.add_post("/v1/unload_lora_adapter", self._unload_lora)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies received on ``path``, oldest first."""
        return [body for p, body in self.requests if p == path]

    # -- routes --------------------------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        base: dict[str, Any] = {"id": self.model, "object": "model", "created": created, "owned_by": "vllm"}
        data = [base]
        if self.vllm_extensions:
            base.update(root=self.model, parent=None, max_model_len=self.max_model_len)
            data += [
                {"id": name, "object": "model", "created": created, "owned_by": "vllm", "root": path,
                 "parent": self.model, "max_model_len": None}
                for name, path in self.loras.items()
            ]
        return web.json_response({"object": "list", "data": data})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        model_error = self._check_model(body)
        if model_error is not None:
            return model_error
        count = self._prompt_tokens(body)
        return web.json_response({"count": count, "max_model_len": self.max_model_len, "tokens": list(range(count)),
                                  "token_strs": None})

    async def _load_lora(self, request: web.Request) -> web.Response:
        body = await self._record(request)
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
            return _error(400, f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.",
                          "BadRequestError")
        self.loras[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload_lora(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        name = body.get("lora_name")
        if name not in self.loras:
            return _error(404, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del self.loras[name]
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        return await self._generate(request, body, str(body.get("prompt", "")), chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        return await self._generate(request, body, users[-1] if users else "", chat=True)

    # -- generation ----------------------------------------------------------------------------------------------

    async def _generate(
        self, request: web.Request, body: dict[str, Any], text: str, *, chat: bool
    ) -> web.StreamResponse:
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

        slow = text.startswith("!slow")
        fail_after = 2 if text.startswith("!midfail") else None
        model = body["model"]
        tokens = [" tick"] * SLOW_TOKENS if slow else pieces(text)[1 if fail_after else 0 :]
        if model != self.model:
            tokens = [f"<{model}>"] + [t.upper() for t in tokens]
        stops = [s for s in (body.get("stop") or []) if s] if self.honour_stop else []
        hold = max((len(s) for s in stops), default=1) - 1

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
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

        async def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        try:
            if chat:
                first = chunk("")
                first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
                await send(first)
            produced, sent, generated = "", 0, 0
            finish, stop_reason = "stop", None
            for index, token in enumerate(tokens):
                if generated == max_tokens:
                    finish = "length"
                    break
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("client went away")
                if fail_after is not None and generated == fail_after:
                    error = {"object": "error", "message": "simulated engine failure", "type": "InternalServerError",
                             "param": None, "code": 500}
                    await send(error if text.startswith("!midfail=flat") else {"error": error})
                    await send("[DONE]")
                    await response.write_eof()
                    return response
                if slow or self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s or 0.01)
                generated += 1
                if slow:
                    self.slow_tokens_sent += 1
                produced += token
                matched = _first_stop(produced, stops)
                last = index == len(tokens) - 1 or generated == max_tokens
                if matched is not None:
                    produced = produced[: produced.index(matched)]
                    finish, stop_reason = "stop", matched
                    await send(chunk(produced[sent:], finish, stop_reason))
                    break
                if last:
                    finish = "length" if generated == max_tokens else "stop"  # EOS comes after the last piece
                    await send(chunk(produced[sent:], finish))
                    break
                visible = len(produced) - hold if stops else len(produced)
                if visible > sent:
                    await send(chunk(produced[sent:visible]))
                    sent = visible
            else:
                await send(chunk("" if not chat else None, finish))  # no tokens at all
            if self.send_usage and (body.get("stream_options") or {}).get("include_usage"):
                await send({
                    "id": ident,
                    "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                              "total_tokens": prompt_tokens + generated},
                })
            await send("[DONE]")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            self.disconnected.set()
            raise
        return response

    # -- helpers -------------------------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        self.requests.append((request.path, body))
        return body

    def _check_model(self, body: dict[str, Any]) -> web.Response | None:
        model = body.get("model")
        if model == self.model or model in self.loras:
            return None
        return _error(404, f"The model `{model}` does not exist.", "NotFoundError", param="model")

    def _prompt_tokens(self, body: dict[str, Any]) -> int:
        if "messages" in body:
            return sum(len(pieces(m.get("content", ""))) + CHAT_TOKENS_PER_MESSAGE for m in body["messages"]) + (
                CHAT_GENERATION_PROMPT_TOKENS
            )
        return len(pieces(str(body.get("prompt", ""))))


def _first_stop(text: str, stops: list[str]) -> str | None:
    found = [(text.find(s), s) for s in stops if s in text]
    return min(found)[1] if found else None


def _error(status: int, message: str, err_type: str, param: str | None = None, *, nested: bool = False) -> web.Response:
    """vLLM's ErrorResponse body: flat (older vLLM) or nested under "error" (OpenAI and newer vLLM)."""
    error = {"object": "error", "message": message, "type": err_type, "param": param, "code": status}
    return web.json_response({"error": error} if nested else error, status=status)
