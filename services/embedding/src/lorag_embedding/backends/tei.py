"""Embeddings from a Text Embeddings Inference (TEI) server, through huggingface_hub's ``AsyncInferenceClient``.

TEI batches on its side (the same token-budget scheme as :mod:`lorag_embedding.batching`), so this backend sends
each caller's texts as they come, in one call per request.

How each TEI route is reached, having read huggingface_hub 2.x:

* ``POST /embed`` — ``AsyncInferenceClient.feature_extraction`` accepts ``str | list[str]``; with a URL for
  ``model`` and the ``hf-inference`` provider it posts ``{"inputs": [...], "normalize", "truncate", "prompt_name"}``
  (``None`` values dropped) to that URL unchanged and returns a float32 ``[n, d]`` array. So a whole request goes in
  one call, to ``<url>/embed`` explicitly (TEI also embeds on ``POST /``, but only for embedding models).
* ``GET /info`` — ``AsyncInferenceClient.get_endpoint_info``; ``start()`` reads the model id and limits from it.
* ``POST /tokenize`` — the client has no method for it, so it goes through the same HTTP session. The per-text token
  counts it returns fill ``EmbedResult.token_counts`` and ``truncated``, and let a too-long text be refused as
  ``texts[i]`` (TEI itself would only say that *some* input is too long). With ``truncate=true`` no text can be
  refused, so counting and embedding run concurrently and cost one round trip of latency.

The HTTP session is our own ``httpx2.AsyncClient``, handed to the inference client, for three reasons: huggingface_hub
blocks every request of its default session when ``HF_HUB_OFFLINE=1`` (which an offline deployment sets for its
local models, although a self-hosted TEI is no part of the Hub); its default session has no timeout for ``/info``;
and it would send the Hub token saved on the machine to whatever URL TEI has. Without ``api_key`` no Authorization
header is sent; with it, ``Authorization: Bearer <api_key>`` (TEI's ``--api-key``).

Errors: HTTP 429 or ``error_type`` Overloaded → ``ResourceExhausted``; 400/413/422 (Empty, Validation, Tokenizer)
→ ``InvalidArgument`` on field ``texts``; connection failures, timeouts, 5xx, 424 (Backend) and any other status →
``Unavailable`` (the status mapping is :func:`lorag_core.tei.tei_error`, shared with the retrieval service's TEI
reranker). Request rules (validation, truncation) are those of :mod:`lorag_embedding.backends.base`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import httpx2
import numpy as np
from huggingface_hub import AsyncInferenceClient
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import hf_raise_for_status

from lorag_core.errors import InvalidArgument, LoragError, Unavailable
from lorag_core.tei import check_tei_client, tei_error
from lorag_core.telemetry import get_logger
from lorag_embedding.backends.base import EmbedResult, InputType, ModelInfo, apply_token_limit, validate_texts

log = get_logger(__name__)

T = TypeVar("T")

_PROBE_TEXT = "lorag embedding probe"


class TEIEmbedder:
    """Embeds through a TEI server at ``url`` (e.g. ``http://tei:8080``).

    ``timeout`` (seconds, as in ``InferenceClient``) bounds every HTTP call; ``model_id`` overrides the id TEI
    reports; ``max_client_batch_size`` lowers TEI's own per-request limit (it can never raise it, TEI would refuse);
    ``max_connections`` caps the connection pool (TEI answers 429 past its ``--max-concurrent-requests``).
    """

    backend = "tei"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        model_id: str | None = None,
        max_client_batch_size: int | None = None,
        max_connections: int = 64,
    ) -> None:
        self.url = check_tei_client(url, timeout, max_client_batch_size)
        self._api_key = api_key
        self._timeout = timeout
        self._model_id = model_id
        self._max_client_batch_size = max_client_batch_size
        self._max_connections = max_connections
        self._http: httpx2.AsyncClient | None = None
        self._client: AsyncInferenceClient | None = None
        self._prompt_names: set[str] = set()
        self._info: ModelInfo | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise RuntimeError("TEIEmbedder.start() has not completed")
        return self._info

    async def start(self) -> None:
        """Read ``/info``, find which prompts the model has, and embed a probe to learn the dimensions.

        Raises ``Unavailable`` when TEI cannot be reached or answers with an error, ``RuntimeError`` when it serves
        something other than an embedding model.
        """
        if self._info is not None:
            return
        if self._closed:
            raise RuntimeError("a closed TEIEmbedder cannot be restarted")
        hooks: dict[str, list[Any]] = {} if self._api_key else {"request": [_drop_authorization]}
        self._http = httpx2.AsyncClient(
            timeout=self._timeout,
            limits=httpx2.Limits(
                max_connections=self._max_connections, max_keepalive_connections=self._max_connections
            ),
            event_hooks=hooks,
        )
        self._client = AsyncInferenceClient(
            model=self.url, provider="hf-inference", token=self._api_key, timeout=self._timeout
        )
        # Hand our session to the client (see the module docstring); its exit stack closes it on client.close().
        self._client._async_client = await self._client.exit_stack.enter_async_context(self._http)
        try:
            await self._load_info()
        except BaseException:
            await self._client.close()
            raise

    async def _load_info(self) -> None:
        assert self._client is not None
        raw = await self._call("read /info", self._client.get_endpoint_info())
        if not isinstance(raw, dict):
            raise Unavailable(
                f"TEI at {self.url} sent an /info that is not a JSON object",
                reason="DEPENDENCY_PROTOCOL_ERROR",
                metadata={"dependency": "tei", "url": self.url},
            )
        model_type = raw.get("model_type")
        if isinstance(model_type, dict) and model_type and "embedding" not in model_type:
            raise RuntimeError(f"TEI at {self.url} serves a {next(iter(model_type))} model, not an embedding model")
        try:
            max_input = int(raw["max_input_length"])
            max_client_batch = int(raw["max_client_batch_size"])
            if self._max_client_batch_size is not None:
                max_client_batch = min(max_client_batch, self._max_client_batch_size)
            max_batch_tokens = int(raw["max_batch_tokens"])
            model_id = self._model_id or str(raw["model_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable(
                f"TEI at {self.url} sent an /info this client cannot read ({exc!r})",
                reason="DEPENDENCY_PROTOCOL_ERROR",
                metadata={"dependency": "tei", "url": self.url},
            ) from exc

        for input_type in InputType:
            try:
                await self._tokenize([_PROBE_TEXT], input_type.prompt_name)
            except InvalidArgument:  # TEI refuses a prompt name the model does not define
                continue
            self._prompt_names.add(input_type.prompt_name)

        probe = await self._embed([_PROBE_TEXT], None, truncate=True)
        self._info = ModelInfo(
            model_id=model_id,
            backend=self.backend,
            dimensions=int(probe.shape[1]),
            max_input_tokens=max_input,
            normalized=True,
            # TEI's /info does not publish prompt texts; the names are those TEI accepted.
            prompts={name: "" for name in sorted(self._prompt_names)},
            max_batch_tokens=max_batch_tokens,
            max_client_batch_size=max_client_batch,
        )
        log.info(
            "TEI endpoint ready",
            url=self.url,
            model=model_id,
            dimensions=self._info.dimensions,
            max_input_tokens=max_input,
            prompts=sorted(self._prompt_names),
        )

    async def close(self) -> None:
        """Close the HTTP session; calls in flight fail with ``Unavailable``. Idempotent."""
        self._closed = True
        if self._client is not None:
            await self._client.close()

    # -- embedding -----------------------------------------------------------------------------------------------

    async def embed(self, texts: Sequence[str], input_type: InputType, truncate: bool) -> EmbedResult:
        """Validate, count tokens and embed through TEI; vectors come back in input order."""
        if self._closed:
            raise Unavailable("the embedding service is shutting down", reason="SHUTTING_DOWN")
        info = self.info
        validate_texts(texts, info.max_client_batch_size)
        batch = list(texts)
        prompt_name = input_type.prompt_name if input_type.prompt_name in self._prompt_names else None

        started = time.perf_counter_ns()
        if truncate:
            counting = asyncio.ensure_future(self._tokenize(batch, prompt_name))
            try:
                embed_started = time.perf_counter_ns()
                vectors = await self._embed(batch, prompt_name, truncate=True)
                inference_ns = time.perf_counter_ns() - embed_started
                counts = await counting
            finally:
                _discard(counting)
        else:
            counts = await self._tokenize(batch, prompt_name)
            apply_token_limit(counts, info.max_input_tokens, truncate=False)  # refuses texts over the limit
            embed_started = time.perf_counter_ns()
            vectors = await self._embed(batch, prompt_name, truncate=False)
            inference_ns = time.perf_counter_ns() - embed_started
        effective, truncated = apply_token_limit(counts, info.max_input_tokens, truncate)
        total_ns = time.perf_counter_ns() - started

        if vectors.shape != (len(batch), info.dimensions):
            raise Unavailable(
                f"TEI at {self.url} returned vectors of shape {vectors.shape} for {len(batch)} texts "
                f"of {info.dimensions} dimensions",
                metadata={"dependency": "tei"},
            )
        return EmbedResult(
            vectors=vectors,
            token_counts=effective,
            truncated=truncated,
            queue_ns=max(total_ns - inference_ns, 0),
            inference_ns=inference_ns,
        )

    # -- TEI calls -----------------------------------------------------------------------------------------------

    async def _embed(self, texts: list[str], prompt_name: str | None, *, truncate: bool) -> np.ndarray:
        assert self._client is not None
        vectors = await self._call(
            "embed",
            self._client.feature_extraction(
                texts, model=f"{self.url}/embed", normalize=True, truncate=truncate, prompt_name=prompt_name
            ),
        )
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise Unavailable(
                f"TEI at {self.url} returned vectors of shape {vectors.shape} for {len(texts)} texts",
                metadata={"dependency": "tei"},
            )
        return vectors

    async def _tokenize(self, texts: list[str], prompt_name: str | None) -> list[int]:
        """Per-text token counts (special tokens and prompt included, no truncation) from ``POST /tokenize``."""
        payload: dict[str, Any] = {"inputs": texts, "add_special_tokens": True}
        if prompt_name is not None:
            payload["prompt_name"] = prompt_name
        tokens = await self._call("tokenize", self._post_json("/tokenize", payload))
        if not isinstance(tokens, list) or len(tokens) != len(texts) or not all(isinstance(t, list) for t in tokens):
            raise Unavailable(
                f"TEI at {self.url} sent an invalid tokenize response: no token list per input",
                reason="DEPENDENCY_PROTOCOL_ERROR",
                metadata={"dependency": "tei", "url": self.url},
            )
        return [len(t) for t in tokens]

    async def _post_json(self, path: str, payload: dict[str, Any]) -> Any:
        assert self._http is not None
        headers = {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        response = await self._http.post(self.url + path, json=payload, headers=headers)
        hf_raise_for_status(response)
        return response.json()

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        """Await one TEI call, turning every way it can fail into lorag's error model."""
        metadata = {"dependency": "tei", "url": self.url}
        try:
            return await call
        except LoragError:
            raise
        except HfHubHTTPError as exc:
            raise _from_http_error(exc, what, self.url) from exc
        except (httpx2.TimeoutException, TimeoutError) as exc:  # InferenceTimeoutError is a TimeoutError
            raise Unavailable(
                f"TEI at {self.url} did not answer {what} within {self._timeout} s",
                reason="DEPENDENCY_TIMEOUT",
                metadata=metadata,
            ) from exc
        except httpx2.HTTPError as exc:  # connection refused or reset, DNS, protocol errors, closed client
            raise Unavailable(f"cannot reach TEI at {self.url} ({what}): {exc!r}", metadata=metadata) from exc
        except RuntimeError as exc:  # httpx2 refuses requests on a closed client with RuntimeError
            if self._closed:
                raise Unavailable("the embedding service is shutting down", reason="SHUTTING_DOWN") from exc
            raise
        except ValueError as exc:  # unparsable JSON or a ragged vector list: TEI broke its own API
            raise Unavailable(
                f"TEI at {self.url} sent an invalid {what} response: {exc}",
                reason="DEPENDENCY_PROTOCOL_ERROR",
                metadata=metadata,
            ) from exc


def _from_http_error(exc: HfHubHTTPError, what: str, url: str) -> LoragError:
    """Map a TEI error response (``{"error": str, "error_type": str}`` with its status) to a lorag error."""
    try:
        body = exc.response.json()
    except ValueError:
        body = None
    return tei_error(
        exc.response.status_code,
        body,
        exc.server_message or exc.response.reason_phrase,
        what=what,
        url=url,
        subject="TEI",
        field="texts",
    )


async def _drop_authorization(request: httpx2.Request) -> None:
    """Without an api_key, send no credentials: huggingface_hub would add the machine's saved Hub token."""
    if "authorization" in request.headers:
        del request.headers["authorization"]


def _discard(task: asyncio.Future[Any]) -> None:
    """Cancel a helper task we no longer need, and mark its failure (if any) as seen."""
    if not task.done():
        task.cancel()
    else:
        task.cancelled() or task.exception()


__all__ = ["TEIEmbedder"]
