"""A sentence-transformers ``CrossEncoder`` in this process: the classic reranker (query and passage read together).

Needs the optional extra ``lorag-retrieval[cross-encoder]`` (sentence-transformers and torch); the import happens in
:meth:`CrossEncoderReranker.start`, so the service without the extra never loads torch. The model is any
sequence-classification CrossEncoder, by folder or Hugging Face id (for example
``cross-encoder/ms-marco-MiniLM-L-6-v2`` or ``BAAI/bge-reranker-base``); none is bundled with lorag.

Inference runs on one dedicated worker thread (a one-thread executor), so the event loop keeps serving while a
forward pass runs and one thread owns the model; ``torch_threads`` caps torch's intra-op threads. Passages waiting
for that thread are bounded by ``max_queue_passages``: past it a call is refused with ``ResourceExhausted``
(reason ``QUEUE_FULL``) instead of queueing without limit.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lorag_core.errors import FieldViolation, InvalidArgument, ResourceExhausted, Unavailable
from lorag_core.telemetry import get_logger
from lorag_retrieval.rerankers.base import RerankScores

log = get_logger(__name__)


class CrossEncoderLoadError(RuntimeError):
    """The CrossEncoder model could not be loaded (missing extra, missing folder, unknown id offline)."""


class CrossEncoderReranker:
    """Scores query-passage pairs with a sentence-transformers ``CrossEncoder`` loaded from ``model``.

    ``model`` is a folder or a Hugging Face id; ``model_id`` is the name reported to clients (default
    ``str(model)``). ``num_labels`` is passed to ``CrossEncoder`` (leave it unset for a trained reranker; 1 builds a
    fresh one-score head on a plain encoder, which only tests should do). ``max_length`` caps the pair's tokens
    (default: the model's).
    """

    name = "cross-encoder"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        model_id: str | None = None,
        device: str | None = None,
        torch_threads: int | None = None,
        batch_size: int = 32,
        max_queue_passages: int = 4096,
        num_labels: int | None = None,
        max_length: int | None = None,
    ) -> None:
        if not str(model):
            raise ValueError("a CrossEncoder model folder or Hugging Face id is required")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_queue_passages < 1:
            raise ValueError(f"max_queue_passages must be at least 1, got {max_queue_passages}")
        if torch_threads is not None and torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1, got {torch_threads}")
        self._model_ref = str(model)
        self._model_id = model_id or str(model)
        self._device = device
        self._torch_threads = torch_threads
        self._batch_size = batch_size
        self._max_queue = max_queue_passages
        self._num_labels = num_labels
        self._max_length = max_length
        self._model: Any = None
        self._token_limit = 512
        self._executor: ThreadPoolExecutor | None = None
        self._pending = 0
        self._closed = False

    @property
    def model(self) -> str:
        return self._model_id

    @property
    def token_limit(self) -> int:
        """The most tokens of one query-passage pair the model reads (once started)."""
        return self._token_limit

    async def start(self) -> None:
        """Import sentence-transformers and load the model on the worker thread; raise when it cannot be loaded."""
        if self._model is not None:
            return
        if self._closed:
            raise RuntimeError("a closed CrossEncoderReranker cannot be restarted")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorag-rerank-infer")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            self._model = await loop.run_in_executor(self._executor, self._load)
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            raise
        log.info(
            "cross-encoder loaded",
            model=self._model_id,
            device=str(getattr(self._model, "device", "")),
            token_limit=self._token_limit,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _load(self) -> Any:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as exc:  # the optional extra is not installed
            raise CrossEncoderLoadError(
                "the cross-encoder reranker needs sentence-transformers and torch: install "
                "lorag-retrieval[cross-encoder], or choose LORAG_RETRIEVAL_RERANKER=fusion|tei|none"
            ) from exc
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
        ref = self._model_ref
        path = Path(ref).expanduser()
        if path.exists():
            if not path.is_dir():
                raise CrossEncoderLoadError(f"{ref} is not a model folder")
            target = str(path)
        elif ref.startswith((".", "/", "~")) or ref.count("/") > 1:
            raise CrossEncoderLoadError(f"no CrossEncoder model folder at {ref}")
        else:  # a Hugging Face id ("org/name"); offline this fails unless the hub cache has it
            target = ref
        kwargs: dict[str, Any] = {"device": self._device}
        if self._num_labels is not None:
            kwargs["num_labels"] = self._num_labels
        if self._max_length is not None:
            kwargs["max_length"] = self._max_length
        try:
            model = CrossEncoder(target, **kwargs)
        except Exception as exc:
            raise CrossEncoderLoadError(f"cannot load CrossEncoder model {ref!r}: {exc}") from exc
        model.eval()
        limit = (
            self._max_length or getattr(model, "max_length", None) or getattr(model.tokenizer, "model_max_length", 512)
        )
        self._token_limit = min(int(limit or 512), 100_000)
        return model

    async def close(self) -> None:
        self._closed = True
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._model = None

    async def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        truncate: bool = True,
        first_stage: Sequence[float] | None = None,
    ) -> RerankScores:
        """Score every (query, passage) pair; ``first_stage`` is ignored."""
        if self._closed:
            raise Unavailable("the retrieval service is shutting down", reason="SHUTTING_DOWN")
        if self._model is None or self._executor is None:
            raise Unavailable("the cross-encoder is not loaded yet", reason="NOT_READY")
        count = len(passages)
        if self._pending + count > self._max_queue:
            raise ResourceExhausted(
                f"the cross-encoder queue is full ({self._pending} passages waiting, limit {self._max_queue})",
                reason="QUEUE_FULL",
                metadata={"max_queue_passages": str(self._max_queue)},
            )
        self._pending += count
        queued = time.perf_counter_ns()
        try:
            loop = asyncio.get_running_loop()
            scores, tokens, started = await loop.run_in_executor(
                self._executor, self._score, query, list(passages), truncate
            )
        finally:
            self._pending -= count
        finished = time.perf_counter_ns()
        return RerankScores(
            scores=scores,
            model=self._model_id,
            prompt_tokens=tokens,
            queue_ns=max(started - queued, 0),
            inference_ns=max(finished - started, 0),
        )

    def _score(self, query: str, passages: list[str], truncate: bool) -> tuple[list[float], int, int]:
        """On the worker thread: count tokens (refusing long pairs unless ``truncate``), then predict."""
        started = time.perf_counter_ns()
        model = self._model
        encoded = model.tokenizer([query] * len(passages), passages, truncation=False, add_special_tokens=True)
        counts = [len(ids) for ids in encoded["input_ids"]]
        too_long = [i for i, n in enumerate(counts) if n > self._token_limit]
        if too_long and not truncate:
            first = too_long[0]
            raise InvalidArgument(
                message=(
                    f"passages[{first}]: the query and passage make {counts[first]} tokens, over the reranker's "
                    f"limit of {self._token_limit}; shorten them or set truncate=true"
                ),
                reason="TEXT_TOO_LONG",
                metadata={"max_input_tokens": str(self._token_limit)},
                violations=[
                    FieldViolation(f"passages[{i}]", f"{counts[i]} tokens with the query exceed {self._token_limit}")
                    for i in too_long
                ],
            )
        pairs = [(query, passage) for passage in passages]
        raw = model.predict(pairs, batch_size=self._batch_size, show_progress_bar=False, convert_to_numpy=True)
        scores = [float(s) for s in (raw if raw.ndim == 1 else raw[:, 0])]  # num_labels > 1: take the first label
        return scores, sum(min(n, self._token_limit) for n in counts), started


__all__ = ["CrossEncoderLoadError", "CrossEncoderReranker"]
