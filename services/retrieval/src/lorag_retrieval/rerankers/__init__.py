"""Reranker backends behind one interface (:class:`Reranker`): ``fusion`` (default), ``cross-encoder``, ``tei``.

Importing this package is cheap: sentence-transformers and torch load only when
:meth:`CrossEncoderReranker.start` runs (and only with the ``lorag-retrieval[cross-encoder]`` extra installed).
"""

from lorag_retrieval.rerankers.base import MAX_PASSAGES, Reranker, RerankScores, validate_rerank
from lorag_retrieval.rerankers.cross_encoder import CrossEncoderLoadError, CrossEncoderReranker
from lorag_retrieval.rerankers.fusion import FusionReranker, FusionWeights, TextEncoder
from lorag_retrieval.rerankers.tei import TEIReranker

__all__ = [
    "MAX_PASSAGES",
    "CrossEncoderLoadError",
    "CrossEncoderReranker",
    "FusionReranker",
    "FusionWeights",
    "RerankScores",
    "Reranker",
    "TEIReranker",
    "TextEncoder",
    "validate_rerank",
]
