"""``TransformersBackend``: the ``GenerationBackend`` face of the in-process model, on the event loop's side.

It renders and checks prompts, submits jobs to the decode thread and relays their items, and sends adapter loads and
unloads to the thread as commands; the thread itself is :class:`~.decode_loop.DecodeLoop`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from concurrent.futures import Future
from typing import Any

from lorag_core.errors import InvalidArgument, NotFound, Unavailable
from lorag_core.telemetry import get_logger
from lorag_generation.backends.base import (
    AdapterFiles,
    Finished,
    GenerationInput,
    GenerationJob,
    ModelInfo,
    StreamItem,
)
from lorag_generation.backends.transformers.decode_loop import DecodeLoop, OnStep
from lorag_generation.backends.transformers.loading import LoadedModel, load_model
from lorag_generation.backends.transformers.rows import Command, Inbox, Row

log = get_logger(__name__)

#: Rendered prompts kept, so the servicer's token count and the job's submission tokenize a prompt once.
RENDER_CACHE_SIZE = 256


class TransformersBackend:
    """Serves a causal LM (any ``AutoModelForCausalLM`` by path or id) with peft LoRA adapters, batched.

    ``model`` is resolved with ``lorag_models.resolve_model`` (the default is the packaged SmolLM2). ``on_step``
    is called on the decode thread with the batch size of every forward pass (for metrics).
    """

    backend = "transformers"

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = "auto",
        dtype: str | None = "auto",
        torch_threads: int | None = None,
        max_batch_size: int = 8,
        max_queue_size: int = 64,
        max_new_tokens_limit: int = 1024,
        max_context_tokens: int | None = None,
        max_loaded_adapters: int = 4,
        max_lora_rank: int = 64,
        on_step: OnStep | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_queue_size < 0:
            raise ValueError(f"max_queue_size must not be negative, got {max_queue_size}")
        self._reference = model
        self._device_setting = device
        self._dtype_setting = dtype
        self._torch_threads = torch_threads
        self._max_batch_size = max_batch_size
        self._max_new_tokens_limit = max_new_tokens_limit
        self._max_context_setting = max_context_tokens
        self._max_loaded_adapters = max_loaded_adapters
        self._max_lora_rank = max_lora_rank
        self._on_step = on_step

        self._info: ModelInfo | None = None
        self._tokenizer: Any = None  # the event loop's own (prompt rendering); the decode thread has another
        self._rendered: OrderedDict[GenerationInput, list[int]] = OrderedDict()
        self._thread: threading.Thread | None = None
        self._inbox = Inbox(capacity=max_batch_size + max_queue_size)
        self._resident: set[str] = set()  # written by the decode thread only
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model and tokenizer (on the decode thread), warm up, then start decoding."""
        if self._info is not None:
            return
        if self._closed:
            raise RuntimeError("a closed TransformersBackend cannot be restarted")
        started = time.perf_counter()
        ready: Future[ModelInfo] = Future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready,), name="lorag-generation-decode", daemon=True
        )
        self._thread.start()
        info = await asyncio.wrap_future(ready)
        self._info = info
        log.info(
            "generation model loaded",
            model=info.model,
            device=info.device,
            dtype=info.dtype,
            max_context_tokens=info.max_context_tokens,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def close(self) -> None:
        """Finish running and waiting streams with CANCELLED, stop the decode thread; idempotent."""
        self._closed = True
        self._inbox.stop()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def info(self) -> ModelInfo:
        if self._info is None:
            raise Unavailable("the generation model is still loading", reason="MODEL_LOADING")
        return self._info

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a decode slot."""
        return len(self._inbox.pending)

    @property
    def resident_adapters(self) -> frozenset[str]:
        return frozenset(self._resident)

    # -- prompts ----------------------------------------------------------------------------------------------------

    def render(self, generation_input: GenerationInput) -> list[int]:
        """The prompt's token ids: the chat template with the assistant turn opened, or the raw prompt."""
        cached = self._rendered.get(generation_input)
        if cached is not None:
            self._rendered.move_to_end(generation_input)
            return cached
        info = self.info()
        if generation_input.messages is not None:
            if not info.has_chat_template:
                raise InvalidArgument.of(
                    "chat",
                    f"the model {info.model} has no chat template; send a raw prompt instead",
                    reason="NO_CHAT_TEMPLATE",
                )
            messages = [{"role": m.role.value, "content": m.content} for m in generation_input.messages]
            rendered = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
        else:
            ids = list(self._tokenizer(generation_input.prompt)["input_ids"])
        self._rendered[generation_input] = ids
        if len(self._rendered) > RENDER_CACHE_SIZE:
            self._rendered.popitem(last=False)
        return ids

    def count_prompt_tokens(self, generation_input: GenerationInput) -> int:
        return len(self.render(generation_input))

    # -- generation -------------------------------------------------------------------------------------------------

    async def stream(self, job: GenerationJob) -> AsyncGenerator[StreamItem, None]:
        """Queue the job for the decode loop and relay its items; closing the iterator drops the row."""
        if self._closed:
            raise Unavailable("the generation service is shutting down", reason="SHUTTING_DOWN")
        received = time.perf_counter_ns()
        info = self.info()
        prompt_ids = self.render(job.input)
        if not prompt_ids:
            raise InvalidArgument.of("prompt", "the prompt encodes to no tokens")
        total = len(prompt_ids) + job.sampling.max_new_tokens
        if total > info.max_context_tokens:
            field_name = "chat" if job.input.messages is not None else "prompt"
            raise InvalidArgument.of(
                field_name,
                f"the prompt has {len(prompt_ids)} tokens; with max_new_tokens {job.sampling.max_new_tokens} that is "
                f"{total}, over the model's limit of {info.max_context_tokens} tokens",
                reason="PROMPT_TOO_LONG",
                prompt_tokens=str(len(prompt_ids)),
                max_context_tokens=str(info.max_context_tokens),
            )
        adapter = job.adapter.name if job.adapter is not None else None
        if adapter is not None and adapter not in self._resident:
            raise NotFound(f"adapter {adapter!r} is not loaded", reason="ADAPTER_NOT_LOADED")
        row = Row(
            prompt_ids=prompt_ids,
            sampling=job.sampling,
            adapter=adapter,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            received_ns=received,
        )
        self._inbox.submit(row)
        try:
            while True:
                item = await row.queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            if not row.done:
                row.cancelled = True
                self._inbox.release(row)

    # -- adapters ---------------------------------------------------------------------------------------------------

    async def load_adapter(self, name: str, files: AdapterFiles) -> None:
        await self._command(Command("load", name, files))

    async def unload_adapter(self, name: str) -> None:
        await self._command(Command("unload", name))

    async def _command(self, command: Command) -> None:
        if self._closed or self._thread is None:
            raise Unavailable("the generation service is shutting down", reason="SHUTTING_DOWN")
        self._inbox.send(command)
        await asyncio.wrap_future(command.future)

    # -- the decode thread ------------------------------------------------------------------------------------------

    def _thread_main(self, ready: Future[ModelInfo]) -> None:
        """Load the model on this thread (it owns it from here on), report to ``start``, then decode until closed."""
        try:
            loaded = load_model(
                self._reference,
                device=self._device_setting,
                dtype=self._dtype_setting,
                torch_threads=self._torch_threads,
                max_context_tokens=self._max_context_setting,
            )
            info = self._model_info(loaded)
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(loaded.resolved.path)
            loop = DecodeLoop(
                loaded, self._inbox, self._resident, max_batch_size=self._max_batch_size, on_step=self._on_step
            )
        except BaseException as exc:  # reported to start()
            ready.set_exception(exc)
            return
        ready.set_result(info)
        loop.run()

    def _model_info(self, loaded: LoadedModel) -> ModelInfo:
        resolved = loaded.resolved
        return ModelInfo(
            model=resolved.model_id,
            backend=self.backend,
            max_context_tokens=loaded.max_context,
            max_new_tokens_limit=min(self._max_new_tokens_limit, loaded.max_context - 1),
            has_chat_template=loaded.has_chat_template,
            max_loaded_adapters=self._max_loaded_adapters,
            max_batch_size=self._max_batch_size,
            model_revision=resolved.revision,
            device=str(loaded.device),
            dtype=loaded.dtype,
            max_lora_rank=self._max_lora_rank,
            extra={
                "model_path": resolved.path,
                "model_reference": resolved.reference,
                "default_temperature": repr(loaded.default_temperature),
            },
        )
