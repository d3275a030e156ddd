"""The embedding backend interface, and the request rules every backend enforces.

The gRPC servicer converts an ``EmbedRequest`` into ``Embedder.embed(texts, input_type, truncate)`` and converts the
``EmbedResult`` back; it never checks texts itself. Both backends (``local`` and ``tei``) apply the same rules, in
this order, through :func:`validate_texts` and :func:`apply_token_limit`:

1. ``texts`` must hold at least one text, else ``InvalidArgument`` on field ``texts``.
2. ``texts`` may hold at most ``ModelInfo.max_client_batch_size`` texts, else ``InvalidArgument`` on field ``texts``
   naming the limit.
3. No text may be empty or whitespace only, else ``InvalidArgument`` on field ``texts[i]`` (one violation per bad
   text).
4. A text is counted in the model's tokens, special tokens and the input type's prompt included. A text over
   ``ModelInfo.max_input_tokens`` is cut to the limit when ``truncate`` is true (``EmbedResult.truncated[i]`` is
   then true); when ``truncate`` is false it is refused with ``InvalidArgument`` on field ``texts[i]`` naming its
   token count and the limit (one violation per text over the limit).

Invalid UTF-8 never reaches a backend: protobuf refuses it at the gRPC edge.

``EmbedResult.token_counts[i]`` is the number of tokens the model read for ``texts[i]``, after truncation.
Vectors are unit length (``ModelInfo.normalized``), so a dot product is a cosine similarity.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from lorag_core.errors import FieldViolation, InvalidArgument


class InputType(enum.Enum):
    """What a text is for; the value is the sentence-transformers prompt name it selects, when the model has one."""

    QUERY = "query"
    DOCUMENT = "document"

    @property
    def prompt_name(self) -> str:
        return self.value


@dataclass(frozen=True)
class ModelInfo:
    """The model a backend serves and the limits a caller must respect (the ``Info`` RPC reports these)."""

    model_id: str
    backend: str  # "local" or "tei"
    dimensions: int
    max_input_tokens: int
    normalized: bool
    prompts: dict[str, str]
    max_batch_tokens: int
    max_client_batch_size: int


@dataclass
class EmbedResult:
    """Vectors in input order, with what each text cost and where the time went.

    ``queue_ns`` is the time before inference (tokenization and waiting for a batch); ``inference_ns`` the time spent
    in model forward passes (locally) or in the embedding call (TEI).
    """

    vectors: np.ndarray  # float32, shape [n, dimensions]
    token_counts: list[int]
    truncated: list[bool]
    queue_ns: int = 0
    inference_ns: int = 0


@runtime_checkable
class Embedder(Protocol):
    """What the servicer needs from a backend."""

    @property
    def info(self) -> ModelInfo:
        """The served model and its limits; available once ``start()`` returned."""
        ...

    async def start(self) -> None:
        """Load the model or connect to the server; raise when the backend cannot serve."""
        ...

    async def embed(self, texts: Sequence[str], input_type: InputType, truncate: bool) -> EmbedResult:
        """Embed ``texts`` under the rules in this module's docstring."""
        ...

    async def close(self) -> None:
        """Release the model or connection; calls still waiting fail with ``Unavailable``."""
        ...


def validate_texts(texts: Sequence[str], max_client_batch_size: int) -> None:
    """Rules 1-3: a non-empty list, within the batch limit, of non-blank texts."""
    if len(texts) == 0:
        raise InvalidArgument.of("texts", "at least one text is required", reason="EMPTY_INPUT")
    if len(texts) > max_client_batch_size:
        raise InvalidArgument.of(
            "texts",
            f"{len(texts)} texts exceed the limit of {max_client_batch_size} per request",
            reason="TOO_MANY_TEXTS",
            max_client_batch_size=str(max_client_batch_size),
        )
    blank = [i for i, text in enumerate(texts) if not text or text.isspace()]
    if blank:
        raise InvalidArgument(
            message=f"texts[{blank[0]}]: a text must not be empty or whitespace only"
            + (f" ({len(blank)} such texts)" if len(blank) > 1 else ""),
            reason="EMPTY_TEXT",
            violations=[FieldViolation(f"texts[{i}]", "must not be empty or whitespace only") for i in blank],
        )


def apply_token_limit(
    token_counts: Sequence[int], max_input_tokens: int, truncate: bool
) -> tuple[list[int], list[bool]]:
    """Rule 4: the tokens the model will read per text, and which texts are cut; refuse long texts unless ``truncate``.

    Returns ``(effective_counts, truncated)``.
    """
    too_long = [i for i, n in enumerate(token_counts) if n > max_input_tokens]
    if too_long and not truncate:
        first = too_long[0]
        raise InvalidArgument(
            message=(
                f"texts[{first}]: {token_counts[first]} tokens exceed the model's limit of {max_input_tokens}; "
                "shorten the text or set truncate=true"
                + (f" ({len(too_long)} texts over the limit)" if len(too_long) > 1 else "")
            ),
            reason="TEXT_TOO_LONG",
            metadata={"max_input_tokens": str(max_input_tokens)},
            violations=[
                FieldViolation(
                    f"texts[{i}]", f"{token_counts[i]} tokens exceed the model's limit of {max_input_tokens}"
                )
                for i in too_long
            ],
        )
    effective = [min(n, max_input_tokens) for n in token_counts]
    truncated = [n > max_input_tokens for n in token_counts]
    return effective, truncated


__all__ = [
    "EmbedResult",
    "Embedder",
    "InputType",
    "ModelInfo",
    "apply_token_limit",
    "validate_texts",
]
