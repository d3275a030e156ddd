"""What every client of a Text Embeddings Inference (TEI) server shares, free of any HTTP library.

The embedding service (``TEIEmbedder``, over huggingface_hub and httpx2) and the retrieval service (``TEIReranker``,
over httpx) each keep their own HTTP session; what they have in common is the rules for the settings of a TEI
client and the meaning of TEI's error responses, both here.

TEI answers an error with a status and a JSON body ``{"error": str, "error_type": str}``. The mapping:

* 429, or ``error_type`` Overloaded → ``ResourceExhausted`` (retry with backoff);
* 400, 413, 422, or ``error_type`` Validation, Tokenizer, Empty → ``InvalidArgument`` with one violation on the
  caller's field that carried the texts;
* anything else (424 Backend, 5xx, an unexpected status) → ``Unavailable``.

Every error names ``dependency=tei``, the ``url``, the ``http_status`` and, when TEI sent one, ``tei_error_type``
in its metadata.
"""

from __future__ import annotations

from lorag_core.errors import FieldViolation, InvalidArgument, LoragError, ResourceExhausted, Unavailable


def check_tei_client(url: str, timeout: float, max_client_batch_size: int | None) -> str:
    """Check a TEI client's settings (raising ``ValueError``); returns ``url`` without trailing slashes."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"TEI url must start with http:// or https://, got {url!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    if max_client_batch_size is not None and max_client_batch_size < 1:
        raise ValueError(f"max_client_batch_size must be at least 1, got {max_client_batch_size}")
    return url.rstrip("/")


def tei_error(
    status: int,
    body: object,
    fallback: str | None,
    *,
    what: str,
    url: str,
    subject: str,
    field: str,
    reason: str = "INVALID_ARGUMENT",
) -> LoragError:
    """The lorag error for a TEI error response (see the module docstring).

    ``body`` is the response's parsed JSON (``None`` when it was not JSON); ``fallback`` is the message to use when
    the body has no ``error`` (then ``HTTP <status>``). ``what`` names the call (``embed``, ``rerank``, ``read /info``);
    ``subject`` names TEI in messages (``TEI``, ``the TEI reranker``); ``field`` is the caller's field that a refused
    input is reported on, with ``reason``.
    """
    error_type, message = "", ""
    if isinstance(body, dict):
        error_type = str(body.get("error_type") or "").lower()
        message = str(body.get("error") or "")
    message = message or fallback or f"HTTP {status}"
    metadata = {"dependency": "tei", "url": url, "http_status": str(status)}
    if error_type:
        metadata["tei_error_type"] = error_type
    if status == 429 or error_type == "overloaded":
        return ResourceExhausted(f"{subject} is overloaded: {message}; retry with backoff", metadata=metadata)
    if status in (400, 413, 422) or error_type in ("validation", "tokenizer", "empty"):
        return InvalidArgument(
            message=f"{field}: {subject} refused the input: {message}",
            reason=reason,
            metadata=metadata,
            violations=[FieldViolation(field, message)],
        )
    return Unavailable(f"TEI at {url} failed to {what} (HTTP {status}): {message}", metadata=metadata)


__all__ = ["check_tei_client", "tei_error"]
