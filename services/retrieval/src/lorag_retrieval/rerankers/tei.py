"""Reranking through a Text Embeddings Inference (TEI) server's ``POST /rerank``, over HTTP with httpx.

TEI's published API (``text-embeddings-router`` serving a sequence-classification model, such as
``BAAI/bge-reranker-base`` or ``cross-encoder/ms-marco-MiniLM-L-6-v2``):

* ``POST /rerank`` with ``{"query": str, "texts": [str], "truncate": bool, "raw_scores": bool}`` answers
  ``[{"index": int, "score": float}, ...]`` sorted by score, best first. With ``raw_scores`` false (ours) scores
  are the model's sigmoid outputs, comparable across calls of the same model.
* ``GET /info`` describes the server; ``max_client_batch_size`` caps the texts of one request (32 by default),
  so longer candidate lists are sent as several requests, concurrently, and merged.
* Errors are JSON ``{"error": str, "error_type": str}``: 413 (batch too large, or input too long with
  ``truncate`` false) and 422 (validation, tokenizer) → ``InvalidArgument`` on ``passages``; 429 (overloaded)
  → ``ResourceExhausted``; 424 (backend), 5xx, connection failures and timeouts → ``Unavailable`` (the status
  mapping is :func:`lorag_core.tei.tei_error`, shared with the embedding service's TEI backend).

``start()`` never needs TEI to be up: ``/info`` is read on first use (and retried on later calls until it answers).
TEI does not report token counts for ``/rerank``, so ``prompt_tokens`` is 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from lorag_core.errors import LoragError, Unavailable
from lorag_core.tei import check_tei_client, tei_error
from lorag_core.telemetry import get_logger
from lorag_retrieval.rerankers.base import RerankScores

log = get_logger(__name__)

#: TEI's default ``--max-client-batch-size``, used until ``/info`` says otherwise.
TEI_DEFAULT_MAX_CLIENT_BATCH = 32


class TEIReranker:
    """Scores passages with the reranker model a TEI server at ``url`` serves.

    ``model`` overrides the model id TEI reports; ``timeout`` (seconds) bounds every HTTP call;
    ``max_client_batch_size`` lowers the per-request text count (never above TEI's own limit).
    """

    name = "tei"

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        max_client_batch_size: int | None = None,
        max_connections: int = 32,
    ) -> None:
        self.url = check_tei_client(url, timeout, max_client_batch_size)
        self._model_override = model
        self._api_key = api_key
        self._timeout = timeout
        self._batch_limit = max_client_batch_size
        self._max_connections = max_connections
        self._http: httpx.AsyncClient | None = None
        self._info: dict[str, Any] | None = None
        self._closed = False

    @property
    def model(self) -> str:
        if self._model_override:
            return self._model_override
        if self._info and isinstance(self._info.get("model_id"), str):
            return str(self._info["model_id"])
        return self.url

    @property
    def max_client_batch_size(self) -> int:
        tei = TEI_DEFAULT_MAX_CLIENT_BATCH
        if self._info is not None:
            try:
                tei = int(self._info.get("max_client_batch_size") or tei)
            except (TypeError, ValueError):
                pass
        return min(tei, self._batch_limit) if self._batch_limit else tei

    async def start(self) -> None:
        """Open the HTTP session; TEI itself is contacted on first use."""
        if self._closed:
            raise RuntimeError("a closed TEIReranker cannot be restarted")
        if self._http is None:
            headers = {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._http = httpx.AsyncClient(
                base_url=self.url,
                timeout=self._timeout,
                headers=headers,
                limits=httpx.Limits(
                    max_connections=self._max_connections, max_keepalive_connections=self._max_connections
                ),
            )

    async def close(self) -> None:
        self._closed = True
        if self._http is not None:
            await self._http.aclose()

    async def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        truncate: bool = True,
        first_stage: Sequence[float] | None = None,
    ) -> RerankScores:
        """Score ``passages`` in TEI; ``first_stage`` is ignored (a cross-encoder reads the texts themselves)."""
        if self._closed:
            raise Unavailable("the retrieval service is shutting down", reason="SHUTTING_DOWN")
        if self._http is None:
            await self.start()
        started = time.perf_counter_ns()
        if self._info is None:
            await self._load_info()
        batch = self.max_client_batch_size
        texts = list(passages)
        inference_started = time.perf_counter_ns()
        parts = await asyncio.gather(
            *(self._rerank_batch(query, texts[i : i + batch], truncate) for i in range(0, len(texts), batch))
        )
        inference_ns = time.perf_counter_ns() - inference_started
        scores = [score for part in parts for score in part]  # batches are consecutive slices, in order
        return RerankScores(
            scores=scores,
            model=self.model,
            prompt_tokens=0,
            queue_ns=max(inference_started - started, 0),
            inference_ns=inference_ns,
        )

    # -- HTTP ------------------------------------------------------------------------------------------------------

    async def _load_info(self) -> None:
        """Read ``/info`` for the model id and the batch limit; on failure go on with the defaults."""
        try:
            info = await self._request("GET", "/info", None, "read /info")
        except Unavailable as exc:
            log.warning("TEI /info unreadable; using defaults", url=self.url, error=str(exc))
            return
        if isinstance(info, dict):
            model_type = info.get("model_type")
            if isinstance(model_type, dict) and model_type and "reranker" not in model_type:
                log.warning("TEI does not serve a reranker model", url=self.url, model_type=list(model_type))
            self._info = info

    async def _rerank_batch(self, query: str, texts: list[str], truncate: bool) -> list[float]:
        payload = {"query": query, "texts": texts, "truncate": truncate, "raw_scores": False}
        body = await self._request("POST", "/rerank", payload, "rerank")
        try:
            scores = [float("nan")] * len(texts)
            for item in body:
                index = int(item["index"])
                if not 0 <= index < len(texts):
                    raise ValueError(f"index {index} out of range for {len(texts)} texts")
                scores[index] = float(item["score"])
            if any(score != score for score in scores):  # NaN: a text without a score
                raise ValueError("not every text got a score")
        except (TypeError, KeyError, ValueError) as exc:
            raise Unavailable(
                f"TEI at {self.url} sent a /rerank response this client cannot read: {exc}",
                reason="DEPENDENCY_PROTOCOL_ERROR",
                metadata={"dependency": "tei", "url": self.url},
            ) from exc
        return scores

    async def _request(self, method: str, path: str, payload: Any, what: str) -> Any:
        assert self._http is not None
        metadata = {"dependency": "tei", "url": self.url}
        try:
            response = await self._http.request(method, path, json=payload)
        except httpx.TimeoutException as exc:
            raise Unavailable(
                f"TEI at {self.url} did not answer {what} within {self._timeout} s",
                reason="DEPENDENCY_TIMEOUT",
                metadata=metadata,
            ) from exc
        except (httpx.HTTPError, RuntimeError) as exc:  # refused, reset, DNS, or a closed client
            if self._closed:
                raise Unavailable("the retrieval service is shutting down", reason="SHUTTING_DOWN") from exc
            raise Unavailable(f"cannot reach TEI at {self.url} ({what}): {exc!r}", metadata=metadata) from exc
        if response.status_code >= 400:
            raise _from_http_error(response, what, self.url)
        try:
            return response.json()
        except ValueError as exc:
            raise Unavailable(
                f"TEI at {self.url} sent an invalid {what} response: {exc}",
                reason="DEPENDENCY_PROTOCOL_ERROR",
                metadata=metadata,
            ) from exc


def _from_http_error(response: httpx.Response, what: str, url: str) -> LoragError:
    """Map a TEI error response (``{"error": str, "error_type": str}`` with its status) to a lorag error."""
    try:
        body, fallback = response.json(), ""
    except ValueError:
        body, fallback = None, response.text[:500]
    return tei_error(
        response.status_code,
        body,
        fallback or response.reason_phrase,
        what=what,
        url=url,
        subject="the TEI reranker",
        field="passages",
        reason="RERANK_INPUT_REFUSED",
    )


__all__ = ["TEI_DEFAULT_MAX_CLIENT_BATCH", "TEIReranker"]
