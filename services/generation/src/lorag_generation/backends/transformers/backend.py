"""A causal LM in this process, decoding concurrent requests in one batch with a KV cache.

Threads, and why:

* **Decoding** runs on one dedicated thread that owns the model: the event loop stays free to accept requests and
  forward tokens while a forward pass runs, and nothing else ever touches the weights (adapter loads and unloads
  are commands the thread runs between steps), so no lock is held around a forward pass.
* **Tokenization** of prompts happens on the event loop with a tokenizer of its own (a few hundred microseconds),
  so an over-long prompt is refused before it takes a slot.

The decode loop (``_DecodeLoop``) is continuous batching: each iteration admits waiting requests into the running
batch (their prompts are prefilled left-padded with their own cache, which is then left-padded and concatenated
onto the running cache), runs one decode step for every row, and drops the rows that finished (end-of-sequence,
max_new_tokens, a stop sequence, or the client going away). A row's tokens reach its asyncio queue through one
``call_soon_threadsafe`` per step. Each row samples with its own settings and ``torch.Generator``; rows with
different LoRA adapters share a step through peft's ``adapter_names``.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import threading
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from lorag_core.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from lorag_core.telemetry import get_logger
from lorag_generation.backends.base import (
    AdapterFiles,
    Finished,
    FinishReason,
    GenerationInput,
    GenerationJob,
    ModelInfo,
    SamplingSettings,
    StreamItem,
    TextDelta,
)
from lorag_generation.stops import StopMatcher

log = get_logger(__name__)

#: peft's name for "no adapter" in a mixed batch.
BASE_ADAPTER = "__base__"
#: Default temperature when the model's generation config names none (SamplingParams in common.proto).
FALLBACK_TEMPERATURE = 0.7

OnStep = Callable[[int], None]


# -- device and dtype: pure, so the GPU choices are tested on CPU -----------------------------------------------------


def choose_device(requested: str | None, cuda_available: bool) -> str:
    """The torch device to load on: ``auto`` (or empty) picks ``cuda`` when a GPU is present, else ``cpu``."""
    wanted = (requested or "auto").strip().lower()
    if wanted == "auto":
        return "cuda" if cuda_available else "cpu"
    if wanted.startswith("cuda") and not cuda_available:
        raise ValueError(f"device {requested!r} was asked for but CUDA is not available")
    if not (wanted in ("cpu", "cuda", "mps") or wanted.startswith("cuda:")):
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")
    return wanted


def choose_dtype(requested: str | None, device: str, bf16_supported: bool) -> str:
    """The weights' dtype name: ``auto`` is bfloat16 on a CUDA device that supports it (float16 on older GPUs)
    and float32 elsewhere, where half precision is slow or unsupported."""
    wanted = (requested or "auto").strip().lower()
    if wanted == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if bf16_supported else "float16"
        return "float32"
    if wanted not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {requested!r}; use auto, float32, bfloat16 or float16")
    if wanted == "bfloat16" and device.startswith("cuda") and not bf16_supported:
        raise ValueError(f"dtype bfloat16 is not supported on {device}")
    return wanted


# -- detokenization ---------------------------------------------------------------------------------------------------


class IncrementalDetokenizer:
    """Turns a growing token sequence into text deltas holding whole characters only.

    Each step decodes a short window (the tokens since the last emitted delta plus a few before it, for context such
    as SentencePiece's leading-space rule) rather than the whole text, and holds text back while it ends in an
    incomplete UTF-8 sequence (decoded as U+FFFD). ``context`` primes the window with the prompt's last tokens.
    """

    def __init__(self, tokenizer: Any, context: Sequence[int] = ()) -> None:
        self._decode = tokenizer.decode
        self._ids: list[int] = list(context[-4:])
        self._prefix = 0
        self._read = len(self._ids)

    def _window(self) -> tuple[str, str]:
        prefix_text = self._decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        full_text = self._decode(self._ids[self._prefix :], skip_special_tokens=True)
        return prefix_text, full_text

    def add(self, token_id: int) -> str:
        """Add one token; return the new whole characters (possibly empty while a character is incomplete)."""
        self._ids.append(token_id)
        prefix_text, full_text = self._window()
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Text still held at the end; an incomplete trailing character is dropped rather than sent as U+FFFD."""
        prefix_text, full_text = self._window()
        self._prefix = self._read = len(self._ids)
        if len(full_text) <= len(prefix_text):
            return ""
        return full_text[len(prefix_text) :].rstrip("\ufffd")


# -- sampling -----------------------------------------------------------------------------------------------------------


def sample_token(logits: Any, sampling: SamplingSettings, seen: Any | None, generator: Any | None) -> int:
    """Choose the next token from one row's logits (shape [vocab]) as ``model.generate`` would.

    Order as in transformers' processors: repetition penalty (over ``seen``, the prompt and completion tokens),
    then greedy argmax at temperature 0, else temperature, top-k, top-p and a draw with ``generator``.
    """
    import torch

    scores = logits.float()
    if sampling.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(scores < 0, scores * sampling.repetition_penalty, scores / sampling.repetition_penalty)
        scores = torch.where(seen, penalised, scores)
    if sampling.greedy:
        return int(scores.argmax())
    scores = scores / sampling.temperature
    vocab = scores.shape[-1]
    if 0 < sampling.top_k < vocab:
        threshold = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        remove_sorted = cumulative <= (1 - sampling.top_p)
        remove_sorted[-1] = False  # always keep the most likely token
        remove = remove_sorted.scatter(0, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    probabilities = scores.softmax(-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


# -- one request inside the decode loop -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Row:
    """One request's state, shared by its asyncio consumer and the decode thread."""

    prompt_ids: list[int]
    sampling: SamplingSettings
    adapter: str | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[StreamItem | BaseException]
    received_ns: int
    generator: Any = None
    seen: Any = None
    detok: IncrementalDetokenizer | None = None
    stops: StopMatcher | None = None
    completion_tokens: int = 0
    unsent_tokens: int = 0
    admitted_ns: int = 0
    first_token_ns: int = 0
    cancelled: bool = False  # set by the consumer when it goes away
    done: bool = False  # set by the decode thread once Finished (or an error) is queued
    released: bool = False  # its admission slot was given back
    outbox: list[StreamItem] = field(default_factory=list)


class _Command:
    """Work the decode thread runs between steps (adapter loads and unloads), with a future for the caller."""

    def __init__(self, kind: str, name: str, files: AdapterFiles | None = None) -> None:
        self.kind = kind
        self.name = name
        self.files = files
        self.future: Future[None] = Future()


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
        self._max_queue_size = max_queue_size
        self._max_new_tokens_limit = max_new_tokens_limit
        self._max_context_setting = max_context_tokens
        self._max_loaded_adapters = max_loaded_adapters
        self._max_lora_rank = max_lora_rank
        self._on_step = on_step

        self._info: ModelInfo | None = None
        self._tokenizer: Any = None  # the event loop's (prompt rendering)
        self._rendered: OrderedDict[GenerationInput, list[int]] = OrderedDict()
        self._loop_state: _DecodeLoop | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._pending: deque[_Row] = deque()
        self._commands: deque[_Command] = deque()
        self._in_flight = 0
        self._stopping = False
        self._closed = False
        self._resident: set[str] = set()

    # -- lifecycle --------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model and tokenizer (on the decode thread), warm up, then start decoding."""
        if self._info is not None:
            return
        if self._closed:
            raise RuntimeError("a closed TransformersBackend cannot be restarted")
        started = time.perf_counter()
        ready: Future[ModelInfo] = Future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="lorag-generation-decode", daemon=True)
        self._thread.start()
        self._info = await asyncio.wrap_future(ready)
        log.info(
            "generation model loaded",
            model=self._info.model,
            device=self._info.device,
            dtype=self._info.dtype,
            max_context_tokens=self._info.max_context_tokens,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def close(self) -> None:
        """Finish running and waiting streams with CANCELLED, stop the decode thread; idempotent."""
        self._closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def info(self) -> ModelInfo:
        if self._info is None:
            raise Unavailable("the generation model is still loading", reason="MODEL_LOADING")
        return self._info

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a decode slot."""
        return len(self._pending)

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
                    "chat", f"the model {info.model} has no chat template; send a raw prompt instead", reason="NO_CHAT_TEMPLATE"
                )
            messages = [{"role": m.role.value, "content": m.content} for m in generation_input.messages]
            rendered = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
        else:
            ids = list(self._tokenizer(generation_input.prompt)["input_ids"])
        self._rendered[generation_input] = ids
        if len(self._rendered) > 256:
            self._rendered.popitem(last=False)
        return ids

    def count_prompt_tokens(self, generation_input: GenerationInput) -> int:
        return len(self.render(generation_input))

    # -- generation -------------------------------------------------------------------------------------------------

    async def stream(self, job: GenerationJob) -> AsyncIterator[StreamItem]:  # type: ignore[override]
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
        row = _Row(
            prompt_ids=prompt_ids,
            sampling=job.sampling,
            adapter=adapter,
            loop=asyncio.get_running_loop(),
            queue=asyncio.Queue(),
            received_ns=received,
        )
        with self._cond:
            capacity = self._max_batch_size + self._max_queue_size
            if self._in_flight >= capacity:
                raise ResourceExhausted(
                    f"the generation queue is full ({self._in_flight} requests running or waiting, limit {capacity});"
                    " retry later",
                    reason="QUEUE_FULL",
                    metadata={"limit": str(capacity)},
                )
            self._in_flight += 1
            self._pending.append(row)
            self._cond.notify()
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
                self._release(row)

    def _release(self, row: _Row) -> None:
        """Give the row's admission slot back (once), from either side."""
        with self._cond:
            if not row.released:
                row.released = True
                self._in_flight -= 1
                self._cond.notify()

    # -- adapters ---------------------------------------------------------------------------------------------------

    async def load_adapter(self, name: str, files: AdapterFiles) -> None:
        await self._command(_Command("load", name, files))

    async def unload_adapter(self, name: str) -> None:
        await self._command(_Command("unload", name))

    async def _command(self, command: _Command) -> None:
        if self._closed or self._thread is None:
            raise Unavailable("the generation service is shutting down", reason="SHUTTING_DOWN")
        with self._cond:
            self._commands.append(command)
            self._cond.notify()
        await asyncio.wrap_future(command.future)

    # -- the decode thread ------------------------------------------------------------------------------------------

    def _thread_main(self, ready: Future[ModelInfo]) -> None:
        try:
            state = _DecodeLoop(self)
            info = state.load()
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(state.resolved.path)
            self._loop_state = state
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            ready.set_exception(exc)
            return
        ready.set_result(info)
        state.run()


class _DecodeLoop:
    """Everything the decode thread owns: the model, the running batch and its KV cache."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.b = backend
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask: Any = None  # [B, T] long, 0 = left padding
        self.lengths: Any = None  # [B] real tokens so far = position of the next token
        self.next_tokens: Any = None  # [B, 1] the token each row feeds next
        self.joinable = True  # whether the model's cache can be merged across prefills (plain DynamicLayer)
        self.peft: Any = None
        self.adapter_mode: tuple[str, str | None] | None = None
        self.deferred_unloads: list[_Command] = []

    # -- loading ----------------------------------------------------------------------------------------------------

    def load(self) -> ModelInfo:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        from lorag_models import resolve_model

        self.torch = torch
        if self.b._torch_threads is not None:
            torch.set_num_threads(self.b._torch_threads)
        resolved = resolve_model(self.b._reference) if self.b._reference else resolve_model()
        self.resolved = resolved
        cuda = torch.cuda.is_available()
        device = choose_device(self.b._device_setting, cuda)
        bf16 = cuda and device.startswith("cuda") and torch.cuda.is_bf16_supported()
        dtype_name = choose_dtype(self.b._dtype_setting, device, bf16)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=getattr(torch, dtype_name))
        model.to(device)
        model.eval()
        self.base = model  # peft injects LoRA layers into it in place; it stays the module we call
        self.device = model.device
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        accepts = inspect.signature(model.forward).parameters
        self.keep_last = "logits_to_keep" in accepts
        # transformers 5 renamed past_key_values to cache; older model classes still take the old name.
        self.cache_arg = "cache" if "cache" in accepts else "past_key_values"

        eos: set[int] = set()
        try:
            generation_config = GenerationConfig.from_pretrained(resolved.path)
        except OSError:
            generation_config = model.generation_config
        for source in (generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(int(t) for t in source)
        self.eos = eos
        default_temperature = FALLBACK_TEMPERATURE
        declared = generation_config.to_diff_dict() if hasattr(generation_config, "to_diff_dict") else {}
        if "temperature" in declared and declared["temperature"] is not None:
            default_temperature = float(declared["temperature"])

        limit = getattr(model.config, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", 0)
        if not limit or limit > 10_000_000:
            limit = 2048
        max_context = min(self.b._max_context_setting or limit, limit)
        self.max_context = max_context
        has_template = bool(getattr(self.tokenizer, "chat_template", None))

        # Warm up the kernels so the first request's time to first token is not a cold start.
        with torch.inference_mode():
            warm = torch.tensor([self.tokenizer("Hello")["input_ids"] or [0]], device=self.device)
            model(input_ids=warm, use_cache=True)

        return ModelInfo(
            model=resolved.model_id,
            backend="transformers",
            max_context_tokens=int(max_context),
            max_new_tokens_limit=min(self.b._max_new_tokens_limit, int(max_context) - 1),
            has_chat_template=has_template,
            max_loaded_adapters=self.b._max_loaded_adapters,
            max_batch_size=self.b._max_batch_size,
            model_revision=resolved.revision,
            device=str(self.device),
            dtype=dtype_name,
            max_lora_rank=self.b._max_lora_rank,
            extra={
                "model_path": resolved.path,
                "model_reference": resolved.reference,
                "default_temperature": repr(default_temperature),
            },
        )

    # -- the loop ---------------------------------------------------------------------------------------------------

    def run(self) -> None:
        b = self.b
        torch = self.torch
        while True:
            with b._cond:
                while not (b._pending or self.rows or b._commands or b._stopping or self._runnable_unloads()):
                    b._cond.wait()
                if b._stopping:
                    break
                commands = list(b._commands)
                b._commands.clear()
                admitted: list[_Row] = []
                if not self.rows or self.joinable:
                    while b._pending and len(self.rows) + len(admitted) < b._max_batch_size:
                        row = b._pending.popleft()
                        if not row.cancelled:
                            admitted.append(row)
            try:
                for command in commands:
                    self._run_command(command)
                for command in self._runnable_unloads():
                    self.deferred_unloads.remove(command)
                    self._run_command(command)
                with torch.inference_mode():
                    if admitted:
                        self._prefill(admitted)
                    if self.rows:
                        self._step()
            except BaseException as exc:  # noqa: BLE001 - a failed step fails its rows, not the service
                log.exception("decode step failed", rows=len(self.rows) + len(admitted))
                for row in {*self.rows, *admitted}:
                    self._fail(row, exc)
                self._reset()
        self._shutdown()

    def _shutdown(self) -> None:
        b = self.b
        with b._cond:
            waiting = list(b._pending)
            b._pending.clear()
            commands = list(b._commands) + self.deferred_unloads
            b._commands.clear()
        for row in [*self.rows, *waiting]:
            if not row.done:
                self._finish(row, FinishReason.CANCELLED)
            self._flush(row)
        for command in commands:
            command.future.set_exception(Unavailable("the generation service is shutting down", reason="SHUTTING_DOWN"))
        self.rows = []
        self.cache = None

    def _reset(self) -> None:
        self.rows = []
        self.cache = self.mask = self.lengths = self.next_tokens = None

    # -- adapters ---------------------------------------------------------------------------------------------------

    def _runnable_unloads(self) -> list[_Command]:
        if not self.deferred_unloads:
            return []
        busy = {row.adapter for row in self.rows} | {row.adapter for row in self.b._pending if not row.cancelled}
        return [c for c in self.deferred_unloads if c.name not in busy]

    def _run_command(self, command: _Command) -> None:
        try:
            if command.kind == "load":
                assert command.files is not None
                self._load_adapter(command.name, command.files)
            else:
                busy = {row.adapter for row in self.rows} | {row.adapter for row in self.b._pending if not row.cancelled}
                if command.name in busy:  # jobs already decoding with it finish first
                    self.deferred_unloads.append(command)
                    return
                self._unload_adapter(command.name)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            command.future.set_exception(exc)
        else:
            command.future.set_result(None)

    def _load_adapter(self, name: str, files: AdapterFiles) -> None:
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, files.path, adapter_name=name, is_trainable=False)
            else:
                if name in self.b._resident:
                    self.peft.delete_adapter(name)
                    self.b._resident.discard(name)
                self.peft.load_adapter(files.path, adapter_name=name, is_trainable=False)
            self.peft.to(self.device)
            self.peft.eval()
        self.b._resident.add(name)
        self.adapter_mode = None

    def _unload_adapter(self, name: str) -> None:
        if name not in self.b._resident:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.peft.delete_adapter(name)
        self.b._resident.discard(name)
        self.adapter_mode = None

    def _forward(self, rows: Sequence[_Row], **inputs: Any) -> Any:
        """One forward pass with the rows' adapters: all-base disables the LoRA layers and one shared adapter is made
        active (both call the transformers model directly, with no per-row routing); a mix goes through peft's
        per-row ``adapter_names``."""
        if self.peft is None:
            return self.base(**inputs)
        names = {row.adapter for row in rows}
        if names == {None}:
            mode: tuple[str, str | None] = ("base", None)
        elif len(names) == 1:
            mode = ("single", next(iter(names)))
        else:
            mode = ("mixed", None)
        if mode != self.adapter_mode:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if mode[0] == "base":
                    self.peft.base_model.disable_adapter_layers()
                else:
                    self.peft.base_model.enable_adapter_layers()
                    # PeftModel keeps its own active adapter (used by its forward); keep it a resident one.
                    active = mode[1] or next(name for name in names if name is not None)
                    self.peft.set_adapter(active)
            self.adapter_mode = mode
        if mode[0] == "mixed":
            return self.peft(**inputs, adapter_names=[row.adapter or BASE_ADAPTER for row in rows])
        return self.base(**inputs)

    # -- prefill and steps -----------------------------------------------------------------------------------------

    def _prefill(self, admitted: list[_Row]) -> None:
        torch = self.torch
        now = time.perf_counter_ns()
        width = max(len(row.prompt_ids) for row in admitted)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(admitted), width), pad, dtype=torch.long)
        mask = torch.zeros((len(admitted), width), dtype=torch.long)
        for i, row in enumerate(admitted):
            row.admitted_ns = now
            n = len(row.prompt_ids)
            ids[i, width - n :] = torch.tensor(row.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
            self._prepare_row(row)
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if self.keep_last else {}
        out = self._forward(admitted, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        logits = out.logits[:, -1, :]
        cache = self._returned_cache(out)
        lengths = mask.sum(-1)
        from transformers.cache_utils import DynamicLayer

        self.joinable = all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))
        tokens = self._sample(logits, admitted)
        if self.rows:
            self._merge(cache, mask, lengths, tokens)
        else:
            self.cache, self.mask, self.lengths = cache, mask, lengths
            self.next_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        self.rows.extend(admitted)
        first = time.perf_counter_ns()
        for row, token in zip(admitted, tokens, strict=True):
            row.first_token_ns = first
            self._accept(row, token)
        self._deliver()
        self._drop_finished()

    def _merge(self, cache: Any, mask: Any, lengths: Any, tokens: list[int]) -> None:
        """Left-pad the shorter of the running and the new cache to the same length and stack them by rows."""
        torch = self.torch
        functional = torch.nn.functional
        width = max(self.mask.shape[1], mask.shape[1])
        grow_old, grow_new = width - self.mask.shape[1], width - mask.shape[1]
        self.mask = torch.cat([functional.pad(self.mask, (grow_old, 0)), functional.pad(mask, (grow_new, 0))])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([functional.pad(old.keys, (0, 0, grow_old, 0)), functional.pad(new.keys, (0, 0, grow_new, 0))])
            old.values = torch.cat(
                [functional.pad(old.values, (0, 0, grow_old, 0)), functional.pad(new.values, (0, 0, grow_new, 0))]
            )
        self.lengths = torch.cat([self.lengths, lengths])
        new_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        self.next_tokens = torch.cat([self.next_tokens, new_tokens])

    def _step(self) -> None:
        torch = self.torch
        if any(row.cancelled for row in self.rows):
            self._drop_finished()
            if not self.rows:
                return
        if self.b._on_step is not None:
            self.b._on_step(len(self.rows))
        ones = torch.ones((self.mask.shape[0], 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self._forward(
            self.rows,
            input_ids=self.next_tokens,
            attention_mask=self.mask,
            position_ids=self.lengths.unsqueeze(1),
            use_cache=True,
            **{self.cache_arg: self.cache},
        )
        self.cache = self._returned_cache(out)
        self.lengths = self.lengths + 1
        tokens = self._sample(out.logits[:, -1, :], self.rows)
        self.next_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        for row, token in zip(self.rows, tokens, strict=True):
            self._accept(row, token)
        self._deliver()
        self._drop_finished()

    @staticmethod
    def _returned_cache(out: Any) -> Any:
        cache = getattr(out, "cache", None)
        return cache if cache is not None else out.past_key_values

    def _sample(self, logits: Any, rows: Sequence[_Row]) -> list[int]:
        if all(row.sampling.greedy and row.sampling.repetition_penalty == 1.0 for row in rows):
            return logits.argmax(-1).tolist()
        return [sample_token(logits[i], row.sampling, row.seen, row.generator) for i, row in enumerate(rows)]

    def _prepare_row(self, row: _Row) -> None:
        torch = self.torch
        row.detok = IncrementalDetokenizer(self.tokenizer, row.prompt_ids)
        row.stops = StopMatcher(row.sampling.stop_sequences)
        if not row.sampling.greedy:
            seed = row.sampling.seed if row.sampling.seed is not None else random.getrandbits(63)
            row.generator = torch.Generator(device=self.device).manual_seed(seed & 0xFFFFFFFFFFFFFFFF)
        if row.sampling.repetition_penalty != 1.0:
            vocab = self.base.get_output_embeddings().weight.shape[0]
            row.seen = torch.zeros(vocab, dtype=torch.bool, device=self.device)
            row.seen[torch.tensor(row.prompt_ids, device=self.device)] = True

    def _accept(self, row: _Row, token: int) -> None:
        """Account one sampled token of ``row``: end of sequence, text (through the stop matcher), limits."""
        if row.done or row.cancelled:
            return
        row.completion_tokens += 1
        if row.seen is not None:
            row.seen[token] = True
        if token in self.eos:
            self._finish(row, FinishReason.STOP)
            return
        assert row.detok is not None and row.stops is not None
        row.unsent_tokens += 1
        emit, matched = row.stops.feed(row.detok.add(token))
        if emit:
            row.outbox.append(TextDelta(emit, row.unsent_tokens))
            row.unsent_tokens = 0
        if matched is not None:
            self._finish(row, FinishReason.STOP_SEQUENCE, matched)
        elif (
            row.completion_tokens >= row.sampling.max_new_tokens
            or len(row.prompt_ids) + row.completion_tokens >= self.max_context
        ):
            self._finish(row, FinishReason.LENGTH)

    def _finish(self, row: _Row, reason: FinishReason, matched: str = "") -> None:
        if reason is not FinishReason.STOP_SEQUENCE and row.detok is not None and row.stops is not None:
            tail, late_match = row.stops.feed(row.detok.flush())
            tail += row.stops.flush()
            if late_match is not None:
                reason, matched = FinishReason.STOP_SEQUENCE, late_match
            if tail:
                row.outbox.append(TextDelta(tail, row.unsent_tokens))
                row.unsent_tokens = 0
        now = time.perf_counter_ns()
        admitted = row.admitted_ns or now
        row.outbox.append(
            Finished(
                finish_reason=reason,
                prompt_tokens=len(row.prompt_ids),
                completion_tokens=row.completion_tokens,
                matched_stop_sequence=matched,
                queue_ns=admitted - row.received_ns,
                inference_ns=now - admitted,
                time_to_first_token_ns=(row.first_token_ns - row.received_ns) if row.first_token_ns else 0,
            )
        )
        row.done = True
        self.b._release(row)

    def _fail(self, row: _Row, exc: BaseException) -> None:
        if row.done:
            return
        row.done = True
        row.outbox.append(exc)  # type: ignore[arg-type]
        self.b._release(row)
        self._flush(row)

    def _deliver(self) -> None:
        """Hand every row's new items to its event loop in one thread-safe call per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Row]] = {}
        for row in self.rows:
            if row.outbox:
                by_loop.setdefault(row.loop, []).append(row)
        for loop, rows in by_loop.items():
            batch = [(row.queue, row.outbox) for row in rows]
            for row in rows:
                row.outbox = []
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # the loop is closed: nobody is listening
                pass

    def _flush(self, row: _Row) -> None:
        if row.outbox:
            items, row.outbox = row.outbox, []
            try:
                row.loop.call_soon_threadsafe(_put_all, [(row.queue, items)])
            except RuntimeError:
                pass

    def _drop_finished(self) -> None:
        """Remove finished and cancelled rows from the batch (and padding columns no remaining row needs)."""
        keep = [i for i, row in enumerate(self.rows) if not (row.done or row.cancelled)]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self._reset()
            return
        torch = self.torch
        index = torch.tensor(keep, device=self.device)
        self.rows = [self.rows[i] for i in keep]
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.lengths = self.lengths[index]
        self.next_tokens = self.next_tokens[index]
        if self.joinable:
            used = self.mask.sum(0).nonzero()
            start = int(used[0]) if used.numel() else 0
            if start > 0:
                self.mask = self.mask[:, start:]
                for layer in self.cache.layers:
                    layer.keys = layer.keys[:, :, start:, :]
                    layer.values = layer.values[:, :, start:, :]


def _put_all(batch: list[tuple[asyncio.Queue[Any], list[Any]]]) -> None:
    for queue, items in batch:
        for item in items:
            queue.put_nowait(item)


__all__ = [
    "TransformersBackend",
    "IncrementalDetokenizer",
    "choose_device",
    "choose_dtype",
    "sample_token",
]
