"""Generation through an OpenAI-compatible HTTP server (vLLM with ``--enable-lora``), using the ``openai`` client.

``base_url`` is the server's OpenAI base, e.g. ``http://vllm:8000/v1``. What goes where:

* A chat goes to ``POST /v1/chat/completions`` (the server applies the model's chat template), a raw prompt to
  ``POST /v1/completions``. Both always stream (``stream=True``, ``stream_options.include_usage``), so Generate and
  GenerateStream share one path. Sampling maps to ``temperature``, ``top_p``, ``max_tokens``, ``stop`` and ``seed``;
  ``top_k`` and ``repetition_penalty`` are vLLM sampling extensions sent in the body only when they differ from
  their defaults, so a plain OpenAI-compatible server never sees fields it may refuse.
* Adapters: vLLM serves each LoRA module as a model name, so a request with an adapter names the adapter as its
  ``model``. Adapters are loaded and unloaded at run time through vLLM's ``POST /v1/load_lora_adapter`` and
  ``POST /v1/unload_lora_adapter`` (the server needs ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).
* ``start()`` reads ``GET /v1/models``: the base model must be listed, and vLLM's ``max_model_len`` on its card gives
  the context length. Token counts come from vLLM's ``POST /tokenize`` (mounted at the server root, beside ``/v1``)
  when the server has it, else from an estimate (see :meth:`OpenAIBackend.count_prompt_tokens`).

Stop sequences are sent to the server and applied again to the received text with :class:`StopMatcher`, because
servers differ (some ignore ``stop``, some cap how many they take, some emit the string). vLLM reports the stop
string that ended a completion as ``choices[].stop_reason``; a ``"stop"`` finish with a string ``stop_reason`` is
STOP_SEQUENCE, any other ``"stop"`` is STOP (end of sequence), ``"length"`` is LENGTH.

Errors map to lorag's model: connection failures and timeouts → ``Unavailable`` naming the URL; HTTP 400/413/422 on a
generation → ``InvalidArgument`` on field ``prompt`` or ``chat`` with the server's message (e.g. vLLM's context
length message); 404 for an adapter model → ``NotFound``; 429 → ``ResourceExhausted``; 5xx and anything else →
``Unavailable``. Closing a stream early closes its HTTP response, which is how vLLM learns to abort the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, TypeVar

import httpx2
import openai
from opentelemetry import metrics, trace

from lorag_core.errors import (
    FailedPrecondition,
    InvalidArgument,
    LoragError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from lorag_core.telemetry import get_logger
from lorag_generation.backends.base import (
    AdapterFiles,
    Finished,
    FinishReason,
    GenerationInput,
    GenerationJob,
    ModelInfo,
    StreamItem,
    TextDelta,
)
from lorag_generation.stops import StopMatcher

log = get_logger(__name__)

T = TypeVar("T")

DEFAULT_API_KEY = "EMPTY"  # vLLM without --api-key accepts anything; the client insists on a value
CHARS_PER_TOKEN = 4  # the estimate used when the server cannot count tokens
CHAT_TOKENS_PER_MESSAGE = 4  # role markers a chat template adds around each message (estimate only)

_DEFAULTS = {"top_k": 0, "repetition_penalty": 1.0}


class OpenAIBackend:
    """A base model and its LoRA adapters served by an OpenAI-compatible server (vLLM) at ``base_url``.

    ``timeout`` (seconds) bounds connecting and each read, so a stream that stalls fails while a long generation
    that keeps streaming does not. ``max_retries`` is the ``openai`` client's retry count for connection errors,
    429 and 5xx before a stream starts; keep it small, the caller has a deadline. ``default_max_context_tokens`` is
    the context length assumed when the server's model card has no ``max_model_len``. ``max_connections`` caps the
    connection pool and is reported as ``max_batch_size`` (the server's own batch size is not published).
    """

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout: float,
        max_new_tokens_limit: int,
        max_loaded_adapters: int,
        *,
        max_retries: int = 1,
        default_max_context_tokens: int = 4096,
        max_connections: int = 64,
        max_lora_rank: int = 0,
        tracer: trace.Tracer | None = None,
        meter: metrics.Meter | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL such as http://vllm:8000/v1, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        # vLLM mounts /tokenize at the server root and the LoRA routes under /v1, beside the OpenAI API.
        self.server_root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self._api_key = api_key or DEFAULT_API_KEY
        self._model = model
        self._timeout = timeout
        self._max_new_tokens_limit = max_new_tokens_limit
        self._max_loaded_adapters = max_loaded_adapters
        self._max_retries = max_retries
        self._default_max_context = default_max_context_tokens
        self._max_connections = max_connections
        self._max_lora_rank = max_lora_rank
        self._tracer = tracer or trace.get_tracer("lorag.generation.openai")
        meter = meter or metrics.get_meter("lorag.generation.openai")
        self._requests = meter.create_counter(
            "lorag.generation.openai.requests",
            unit="{request}",
            description="Generations sent to the OpenAI-compatible server, by outcome (finish reason or error).",
        )
        self._ttft = meter.create_histogram(
            "lorag.generation.openai.time_to_first_token",
            unit="s",
            description="From sending a generation to the first non-empty text delta arriving.",
        )
        self._client: openai.AsyncOpenAI | None = None
        self._sync_client: openai.OpenAI | None = None
        self._sync_lock = threading.Lock()
        self._info: ModelInfo | None = None
        self._can_tokenize = False
        self._closed = False
        self._active: set[openai.AsyncStream[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def _client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "api_key": self._api_key,
            "timeout": httpx2.Timeout(self._timeout),
            "max_retries": self._max_retries,
        }

    async def start(self) -> None:
        """Check the server serves the base model, read its context length and whether it counts tokens.

        Raises ``Unavailable`` when the server cannot be reached or does not list the base model.
        """
        if self._info is not None:
            return
        if self._closed:
            raise RuntimeError("a closed OpenAIBackend cannot be restarted")
        limits = httpx2.Limits(max_connections=self._max_connections, max_keepalive_connections=self._max_connections)
        self._client = openai.AsyncOpenAI(
            **self._client_options(), http_client=openai.DefaultAsyncHttpxClient(limits=limits)
        )
        with self._tracer.start_as_current_span("generation.openai.start", attributes={"server.url": self.base_url}):
            try:
                page = await self._call("list models", self._client.models.list())
                cards = {card.id: card for card in page.data}
                if self._model not in cards:
                    raise Unavailable(
                        f"the OpenAI-compatible server at {self.base_url} does not serve model {self._model!r}; "
                        f"it serves: {', '.join(sorted(cards)) or 'no models'}",
                        reason="MODEL_NOT_SERVED",
                        metadata={"dependency": "openai", "url": self.base_url, "model": self._model},
                    )
                max_model_len = (cards[self._model].model_extra or {}).get("max_model_len")
                max_context = int(max_model_len) if isinstance(max_model_len, int) else self._default_max_context
                self._can_tokenize = await self._call("probe /tokenize", self._probe_tokenize())
            except BaseException:
                await self._client.close()
                self._client = None
                raise
        self._info = ModelInfo(
            model=self._model,
            backend=self.backend,
            max_context_tokens=max_context,
            max_new_tokens_limit=self._max_new_tokens_limit,
            has_chat_template=True,
            max_loaded_adapters=self._max_loaded_adapters,
            max_batch_size=self._max_connections,
            device="",
            max_lora_rank=self._max_lora_rank,
            extra={
                "base_url": self.base_url,
                "token_counting": "server" if self._can_tokenize else "estimate",
                "context_length_source": "server" if isinstance(max_model_len, int) else "default",
            },
        )
        log.info(
            "OpenAI-compatible server ready",
            url=self.base_url,
            model=self._model,
            max_context_tokens=max_context,
            token_counting=self._info.extra["token_counting"],
        )

    async def _probe_tokenize(self) -> bool:
        """Whether ``POST /tokenize`` (vLLM) answers with a count; any HTTP error means the server lacks it."""
        try:
            count = await self._tokenize({"model": self._model, "prompt": "lorag"})
        except openai.APIStatusError:
            return False
        return count is not None

    async def close(self) -> None:
        """Close the running streams (they finish with CANCELLED) and the HTTP clients. Idempotent."""
        self._closed = True
        for stream in list(self._active):
            await stream.close()
        if self._client is not None:
            await self._client.close()
        if self._sync_client is not None:
            self._sync_client.close()

    def info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("OpenAIBackend.start() has not completed")
        return self._info

    def _started(self) -> openai.AsyncOpenAI:
        if self._closed:
            raise Unavailable("the generation service is shutting down", reason="SHUTTING_DOWN")
        if self._client is None or self._info is None:
            raise Unavailable("the generation backend has not connected yet", reason="NOT_READY")
        return self._client

    # -- token counting ------------------------------------------------------------------------------------------

    def count_prompt_tokens(self, generation_input: GenerationInput) -> int:
        """Tokens the input occupies once rendered.

        The server's count (vLLM's ``/tokenize``, chat template applied) needs a round trip, which must never block
        an event loop: called from a thread without a running loop (e.g. through ``asyncio.to_thread``) this asks
        the server; called on the event loop it returns :func:`estimate_tokens` at once. Prefer
        :meth:`count_prompt_tokens_async` on the loop. The estimate (characters / 4, plus 4 tokens per chat message)
        is only a guide: the server refuses a prompt over its context itself, with a 400 this backend reports as
        INVALID_ARGUMENT.
        """
        if not self._can_tokenize or self._closed or _loop_running():
            return estimate_tokens(generation_input)
        with self._sync_lock:
            if self._sync_client is None:
                self._sync_client = openai.OpenAI(**self._client_options())
        try:
            body = self._sync_client.post(
                self._tokenize_url(), body=self._tokenize_body(generation_input), cast_to=object
            )
        except openai.OpenAIError:
            return estimate_tokens(generation_input)
        count = body.get("count") if isinstance(body, dict) else None
        return count if isinstance(count, int) else estimate_tokens(generation_input)

    async def count_prompt_tokens_async(self, generation_input: GenerationInput) -> int:
        """The server's token count when it has ``/tokenize``, else :func:`estimate_tokens`."""
        self._started()
        if not self._can_tokenize:
            return estimate_tokens(generation_input)
        field = "chat" if generation_input.messages is not None else "prompt"
        with self._tracer.start_as_current_span("generation.openai.tokenize", attributes={"lorag.input": field}):
            try:
                count = await self._call("tokenize", self._tokenize(self._tokenize_body(generation_input)))
            except InvalidArgument as exc:  # the server could not render it: report it on the input field
                raise InvalidArgument.of(
                    field, exc.violations[0].description if exc.violations else exc.message
                ) from None
        return count if count is not None else estimate_tokens(generation_input)

    def _tokenize_url(self) -> str:
        return f"{self.server_root}/tokenize"

    def _tokenize_body(self, generation_input: GenerationInput) -> dict[str, Any]:
        if generation_input.messages is not None:
            return {"model": self._model, "messages": _messages(generation_input), "add_generation_prompt": True}
        return {"model": self._model, "prompt": generation_input.prompt}

    async def _tokenize(self, body: dict[str, Any]) -> int | None:
        assert self._client is not None
        answer = await self._client.post(self._tokenize_url(), body=body, cast_to=object)
        count = answer.get("count") if isinstance(answer, dict) else None
        return count if isinstance(count, int) else None

    # -- generation ----------------------------------------------------------------------------------------------

    async def stream(self, job: GenerationJob) -> AsyncGenerator[StreamItem, None]:
        """Stream one completion: text deltas (stop sequences held back and cut), then one :class:`Finished`.

        Usage comes from the server's final usage chunk (``stream_options.include_usage``). When the server sends
        none, or the stream is closed here because the client-side stop matcher matched first, completion tokens
        are the number of text chunks received (vLLM sends one per decoded token; a server that batches tokens into
        a chunk makes this an undercount) and prompt tokens are :meth:`count_prompt_tokens_async`.
        """
        client = self._started()
        chat = job.input.messages is not None
        field = "chat" if chat else "prompt"
        model = job.adapter.name if job.adapter is not None else self._model
        request = self._request(job, model)
        span = self._tracer.start_span(
            "generation.openai.stream",
            attributes={
                "server.url": self.base_url,
                "lorag.model": model,
                "lorag.adapter": job.adapter.name if job.adapter is not None else "",
                "lorag.input": field,
                "lorag.request_id": job.request_id,
                "lorag.max_new_tokens": job.sampling.max_new_tokens,
                "lorag.stop_sequences": len(job.sampling.stop_sequences),
            },
        )
        started = time.perf_counter_ns()
        first_token_ns = 0
        matcher = StopMatcher(job.sampling.stop_sequences)
        held_tokens = 0  # chunks received whose text has not been emitted yet
        chunks = 0
        finish_raw: str | None = None
        stop_reason: Any = None
        usage: Any = None
        response: openai.AsyncStream[Any] | None = None
        outcome = "error"
        try:
            with trace.use_span(span, end_on_exit=False):
                create = client.chat.completions.create if chat else client.completions.create
                opened: openai.AsyncStream[Any] = await self._call(
                    "generate", create(**request), field=field, adapter=job.adapter.name if job.adapter else None
                )
            response = opened
            self._active.add(opened)
            async with contextlib.aclosing(self._chunks(opened, field, job)) as chunk_stream:
                async for chunk in chunk_stream:
                    if getattr(chunk, "usage", None) is not None:
                        usage = chunk.usage
                    for choice in getattr(chunk, "choices", None) or ():
                        if getattr(choice, "index", 0) != 0:
                            continue
                        text = (choice.delta.content if choice.delta is not None else None) if chat else choice.text
                        if text:
                            if not first_token_ns:
                                first_token_ns = time.perf_counter_ns() - started
                                self._ttft.record(first_token_ns / 1e9, {"lorag.adapter": bool(job.adapter)})
                            chunks += 1
                            held_tokens += 1
                            emit, _matched = matcher.feed(text)
                            if emit:
                                yield TextDelta(emit, held_tokens)
                                held_tokens = 0
                        if choice.finish_reason is not None:
                            finish_raw = choice.finish_reason
                            stop_reason = (choice.model_extra or {}).get("stop_reason")
                    if matcher.matched is not None:
                        break  # the server did not stop at the sequence: close the stream so it stops generating

            if matcher.matched is not None:
                reason, matched = FinishReason.STOP_SEQUENCE, matcher.matched
            else:
                tail = matcher.flush()
                if tail:
                    yield TextDelta(tail, held_tokens)
                reason, matched = self._finish_reason(finish_raw, stop_reason)
            if usage is not None and matcher.matched is None:
                prompt_tokens, completion_tokens = int(usage.prompt_tokens), int(usage.completion_tokens)
            else:
                prompt_tokens = int(usage.prompt_tokens) if usage is not None else await self._prompt_fallback(job)
                completion_tokens = chunks
            outcome = reason.value
            span.set_attributes(
                {
                    "lorag.finish_reason": reason.value,
                    "lorag.prompt_tokens": prompt_tokens,
                    "lorag.completion_tokens": completion_tokens,
                    "lorag.usage_source": "server" if usage is not None and matcher.matched is None else "counted",
                }
            )
            yield Finished(
                finish_reason=reason,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                matched_stop_sequence=matched,
                queue_ns=0,
                inference_ns=time.perf_counter_ns() - started,
                time_to_first_token_ns=first_token_ns,
            )
        except GeneratorExit:
            outcome = "client_closed"
            raise
        except asyncio.CancelledError:
            outcome = "client_cancelled"
            raise
        except LoragError as exc:
            outcome = exc.code.name
            span.set_status(trace.StatusCode.ERROR, exc.message)
            raise
        finally:
            if response is not None:
                self._active.discard(response)
                await response.close()  # an early close tells the server to abort the request
            span.set_attribute("lorag.outcome", outcome)
            span.end()
            self._requests.add(1, {"outcome": outcome, "lorag.input": field})

    def _request(self, job: GenerationJob, model: str) -> dict[str, Any]:
        """The create() arguments: OpenAI's sampling fields, vLLM's extensions only when not at their defaults."""
        sampling = job.sampling
        request: dict[str, Any] = {
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if job.input.messages is not None:
            request["messages"] = _messages(job.input)
        else:
            request["prompt"] = job.input.prompt
        if sampling.stop_sequences:
            request["stop"] = list(sampling.stop_sequences)
        if sampling.seed is not None:
            request["seed"] = sampling.seed
        extra = {
            name: getattr(sampling, name) for name, default in _DEFAULTS.items() if getattr(sampling, name) != default
        }
        if extra:
            request["extra_body"] = extra
        if job.request_id:
            request["extra_headers"] = {"X-Request-Id": job.request_id}
        return request

    async def _chunks(
        self, response: openai.AsyncStream[Any], field: str, job: GenerationJob
    ) -> AsyncGenerator[Any, None]:
        """The stream's chunks, with its failures mapped; a stream closed by :meth:`close` just ends."""
        adapter = job.adapter.name if job.adapter is not None else None
        iterator = response.__aiter__()
        while True:
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                if self._closed:
                    return
                raise self._error(exc, "generate", field=field, adapter=adapter) from exc
            if getattr(chunk, "object", None) == "error":  # vLLM's flat ErrorResponse sent as a stream event
                extra = chunk.model_extra or {}
                raise self._status_error(
                    _int(extra.get("code")) or 500, str(extra.get("message", "")), "generate", field, adapter
                )
            yield chunk

    def _finish_reason(self, finish: str | None, stop_reason: Any) -> tuple[FinishReason, str]:
        if finish == "length":
            return FinishReason.LENGTH, ""
        if finish == "stop":
            if isinstance(stop_reason, str) and stop_reason:
                return FinishReason.STOP_SEQUENCE, stop_reason
            return FinishReason.STOP, ""
        if finish is None or finish == "abort":
            if self._closed or finish == "abort":
                return FinishReason.CANCELLED, ""
            raise Unavailable(
                f"the stream from {self.base_url} ended without a finish reason",
                reason="DEPENDENCY_PROTOCOL_ERROR",
                metadata={"dependency": "openai", "url": self.base_url},
            )
        return FinishReason.STOP, ""  # "content_filter", "tool_calls", "function_call": the model's turn ended

    async def _prompt_fallback(self, job: GenerationJob) -> int:
        if self._closed:
            return estimate_tokens(job.input)
        try:
            return await self.count_prompt_tokens_async(job.input)
        except LoragError:
            return estimate_tokens(job.input)

    # -- adapters ------------------------------------------------------------------------------------------------

    async def load_adapter(self, name: str, files: AdapterFiles) -> None:
        """``POST /v1/load_lora_adapter``. The server reads ``files.path`` itself, so the path must be one the server
        sees. vLLM refuses a name it already holds; if it holds it for the same path that is success, otherwise the
        old module is unloaded and the new one loaded (the interface replaces what the name held)."""
        client = self._started()
        with self._tracer.start_as_current_span(
            "generation.openai.load_adapter", attributes={"lorag.adapter": name, "server.url": self.base_url}
        ) as span:
            try:
                await self._lora_call(client, "load", {"lora_name": name, "lora_path": files.path})
                span.set_attribute("lorag.adapter.outcome", "loaded")
            except _AlreadyLoaded:
                root = (await self.server_adapters()).get(name)
                if root == files.path:
                    span.set_attribute("lorag.adapter.outcome", "already_loaded")
                    return
                await self._lora_call(client, "unload", {"lora_name": name})
                await self._lora_call(client, "load", {"lora_name": name, "lora_path": files.path})
                span.set_attribute("lorag.adapter.outcome", "replaced")
        log.info("adapter loaded on the server", adapter=name, url=self.base_url)

    async def unload_adapter(self, name: str) -> None:
        """``POST /v1/unload_lora_adapter``; vLLM lets requests already running with the adapter finish."""
        client = self._started()
        with self._tracer.start_as_current_span(
            "generation.openai.unload_adapter", attributes={"lorag.adapter": name, "server.url": self.base_url}
        ):
            await self._lora_call(client, "unload", {"lora_name": name})
        log.info("adapter unloaded on the server", adapter=name, url=self.base_url)

    async def server_adapters(self) -> dict[str, str]:
        """The LoRA modules the server lists in ``/v1/models`` (cards whose parent is the base model): name → path."""
        client = self._started()
        page = await self._call("list models", client.models.list())
        adapters = {}
        for card in page.data:
            extra = card.model_extra or {}
            if extra.get("parent") == self._model and card.id != self._model:
                adapters[card.id] = str(extra.get("root") or "")
        return adapters

    async def _lora_call(self, client: openai.AsyncOpenAI, action: str, body: dict[str, Any]) -> None:
        name = body["lora_name"]
        try:
            await client.post(f"/{action}_lora_adapter", body=body, cast_to=str)
        except openai.APIStatusError as exc:
            message = _server_message(exc)
            if _route_missing(exc):
                raise FailedPrecondition(
                    f"the server at {self.base_url} has no runtime LoRA API ({action}_lora_adapter answered "
                    f"{exc.status_code}); start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                    reason="RUNTIME_LORA_DISABLED",
                    metadata={"dependency": "openai", "url": self.base_url},
                ) from exc
            if action == "load" and exc.status_code == 400 and "already" in message.lower():
                raise _AlreadyLoaded() from exc
            metadata = {"adapter": name, "url": self.base_url}
            if exc.status_code == 404:
                what = f"adapter files at {body['lora_path']}" if action == "load" else f"adapter {name!r}"
                raise NotFound(
                    f"the server found no {what}: {message}", reason="ADAPTER_NOT_FOUND", metadata=metadata
                ) from exc
            if exc.status_code in (400, 422):
                raise FailedPrecondition(
                    f"the server refused adapter {name!r}: {message}", reason="ADAPTER_REFUSED", metadata=metadata
                ) from exc
            raise self._error(exc, f"{action} adapter") from exc
        except openai.OpenAIError as exc:
            raise self._error(exc, f"{action} adapter") from exc

    # -- errors --------------------------------------------------------------------------------------------------

    async def _call(self, what: str, call: Awaitable[T], *, field: str | None = None, adapter: str | None = None) -> T:
        """Await one client call, turning every way it can fail into lorag's error model."""
        try:
            return await call
        except openai.OpenAIError as exc:
            raise self._error(exc, what, field=field, adapter=adapter) from exc

    def _error(
        self, exc: BaseException, what: str, *, field: str | None = None, adapter: str | None = None
    ) -> LoragError:
        metadata = {"dependency": "openai", "url": self.base_url}
        if isinstance(exc, LoragError):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return Unavailable(
                f"the OpenAI-compatible server at {self.base_url} did not answer {what} within {self._timeout} s",
                reason="DEPENDENCY_TIMEOUT",
                metadata=metadata,
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return Unavailable(
                f"cannot reach the OpenAI-compatible server at {self.base_url} ({what}): {cause!r}", metadata=metadata
            )
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc.status_code, _server_message(exc), what, field, adapter)
        if isinstance(exc, openai.APIError):  # an error event inside a stream: vLLM puts the status in "code"
            body = exc.body if isinstance(exc.body, dict) else {}
            return self._status_error(_int(body.get("code")) or 500, exc.message, what, field, adapter)
        return Unavailable(
            f"the OpenAI-compatible server at {self.base_url} failed {what}: {exc!r}",
            reason="DEPENDENCY_PROTOCOL_ERROR",
            metadata=metadata,
        )

    def _status_error(self, status: int, message: str, what: str, field: str | None, adapter: str | None) -> LoragError:
        metadata = {"dependency": "openai", "url": self.base_url, "http_status": str(status)}
        if status in (400, 413, 422) and field is not None:
            return InvalidArgument.of(field, message or f"refused by the server (HTTP {status})")
        if status == 404 and adapter is not None:
            return NotFound(
                f"adapter {adapter!r} is not loaded on the server at {self.base_url}: {message}",
                reason="ADAPTER_NOT_FOUND",
                metadata={**metadata, "adapter": adapter},
            )
        if status == 429:
            return ResourceExhausted(
                f"the OpenAI-compatible server at {self.base_url} is overloaded: {message}", metadata=metadata
            )
        if status in (401, 403):
            return Unavailable(
                f"the OpenAI-compatible server at {self.base_url} refused our credentials ({what}): {message}",
                reason="DEPENDENCY_AUTH",
                metadata=metadata,
            )
        return Unavailable(
            f"the OpenAI-compatible server at {self.base_url} failed {what} (HTTP {status}): {message}",
            metadata=metadata,
        )


class _AlreadyLoaded(Exception):
    """vLLM's 400 "The lora adapter '<name>' has already been loaded."."""


def estimate_tokens(generation_input: GenerationInput) -> int:
    """A token estimate for servers that cannot count: characters / 4 rounded up, plus 4 per chat message."""
    if generation_input.messages is not None:
        return sum(
            math.ceil(len(m.content) / CHARS_PER_TOKEN) + CHAT_TOKENS_PER_MESSAGE for m in generation_input.messages
        )
    return math.ceil(len(generation_input.prompt or "") / CHARS_PER_TOKEN)


def _messages(generation_input: GenerationInput) -> list[dict[str, str]]:
    return [{"role": m.role.value, "content": m.content} for m in generation_input.messages or ()]


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own message: vLLM's flat ``{"message": ...}`` or OpenAI's ``{"error": {"message": ...}}``."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        inner = error if isinstance(error, dict) else body
        message = inner.get("message") or inner.get("detail")
        if isinstance(message, str) and message:
            return message
    try:
        text = exc.response.text
    except httpx2.ResponseNotRead:
        text = ""
    return text.strip() or exc.response.reason_phrase


def _route_missing(exc: openai.APIStatusError) -> bool:
    """A 404/405 from the web framework (no such route), not from vLLM's handler (which sends an error object)."""
    if exc.status_code not in (404, 405):
        return False
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        inner = error if isinstance(error, dict) else body
        return "message" not in inner and "type" not in inner
    return True


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


__all__ = ["OpenAIBackend", "estimate_tokens"]
