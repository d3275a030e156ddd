"""The reranker interface, and the request rules every reranker enforces.

A reranker scores passages against a query: ``await reranker.rerank(query, passages, truncate=...)`` returns one
score per passage, in the passages' order (higher is more relevant; comparable within one call only). The
``Rerank`` RPC and the rerank stage of ``Retrieve`` both go through it. Backends:

* ``fusion`` (:mod:`lorag_retrieval.rerankers.fusion`, the default): no model of its own; fuses BM25 over the
  candidates, sentence-level MaxP similarity from the embedding service's bi-encoder and the search order;
* ``cross-encoder`` (:mod:`lorag_retrieval.rerankers.cross_encoder`): a sentence-transformers CrossEncoder in
  process (the optional extra ``lorag-retrieval[cross-encoder]``);
* ``tei`` (:mod:`lorag_retrieval.rerankers.tei`): a Text Embeddings Inference server's ``POST /rerank``.

Rules (:func:`validate_rerank`), in the ``Rerank`` RPC's field names: a non-blank ``query``; at least one and at
most :data:`MAX_PASSAGES` passages; no blank passage. ``truncate=False`` refuses a query-passage pair over the
model's token limit with ``InvalidArgument`` on ``passages[i]`` where the backend can tell which pair it was.

``first_stage`` (optional) carries the search scores of the passages when they come from a search, in the same
order; rerankers that fuse with the first stage use it, the others ignore it. Without it, the input order is the
first-stage order.

Errors: ``Unavailable`` when the backend (TEI, the embedding service) cannot be reached, ``ResourceExhausted`` when
it is at capacity, ``InvalidArgument`` for a refused input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from lorag_core.errors import FieldViolation, InvalidArgument

#: The most passages one Rerank call may carry (the RerankRequest contract).
MAX_PASSAGES = 1000


@dataclass
class RerankScores:
    """One score per passage in input order, the model that made them, and what the call cost.

    ``prompt_tokens`` counts the tokens the model read (0 when the backend cannot tell); ``queue_ns`` is the time
    before inference and ``inference_ns`` the time in the model (or in the remote call).
    """

    scores: list[float]
    model: str
    prompt_tokens: int = 0
    queue_ns: int = 0
    inference_ns: int = 0


@runtime_checkable
class Reranker(Protocol):
    """What the retrieval pipeline and the Rerank handler need from a backend."""

    #: The backend's configuration name: "fusion", "cross-encoder" or "tei".
    name: str

    @property
    def model(self) -> str:
        """The model reported in responses (best known value before the first call)."""
        ...

    async def start(self) -> None:
        """Load what must be in process; never wait for a remote dependency (it may come up later)."""
        ...

    async def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        truncate: bool = True,
        first_stage: Sequence[float] | None = None,
    ) -> RerankScores:
        """Score ``passages`` against ``query`` (see the module docstring)."""
        ...

    async def close(self) -> None:
        """Release the model or connections. Idempotent."""
        ...


def validate_rerank(query: str, passages: Sequence[str], top_n: int | None = None) -> None:
    """The Rerank request rules; raises ``InvalidArgument`` with every violation found."""
    violations: list[FieldViolation] = []
    if not query or query.isspace():
        violations.append(FieldViolation("query", "must not be empty or whitespace only"))
    if len(passages) == 0:
        violations.append(FieldViolation("passages", "at least one passage is required"))
    elif len(passages) > MAX_PASSAGES:
        violations.append(FieldViolation("passages", f"{len(passages)} passages exceed the limit of {MAX_PASSAGES}"))
    else:
        violations.extend(
            FieldViolation(f"passages[{i}]", "must not be empty or whitespace only")
            for i, passage in enumerate(passages)
            if not passage or passage.isspace()
        )
    if top_n is not None and top_n < 1:
        violations.append(FieldViolation("top_n", f"must be at least 1 when set, got {top_n}"))
    if violations:
        first = violations[0]
        more = f" ({len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(message=f"{first.field}: {first.description}{more}", violations=violations)


__all__ = ["MAX_PASSAGES", "RerankScores", "Reranker", "validate_rerank"]
