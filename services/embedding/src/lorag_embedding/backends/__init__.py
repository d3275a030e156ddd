"""Embedding backends behind one interface (:class:`Embedder`): a local sentence-transformers model, or TEI.

The request rules both enforce are documented in :mod:`lorag_embedding.backends.base`. Importing this package is
cheap: torch and sentence-transformers load only when :meth:`LocalEmbedder.start` runs.
"""

from lorag_embedding.backends.base import (
    Embedder,
    EmbedResult,
    InputType,
    ModelInfo,
    apply_token_limit,
    validate_texts,
)
from lorag_embedding.backends.local import DEFAULT_MODEL_ID, LocalEmbedder, default_model_path
from lorag_embedding.backends.tei import TEIEmbedder

__all__ = [
    "DEFAULT_MODEL_ID",
    "EmbedResult",
    "Embedder",
    "InputType",
    "LocalEmbedder",
    "ModelInfo",
    "TEIEmbedder",
    "apply_token_limit",
    "default_model_path",
    "validate_texts",
]
