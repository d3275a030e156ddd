"""Maximal marginal relevance (Carbonell and Goldstein, 1998): pick passages that are relevant and not redundant.

Pure numpy, no I/O. At each step MMR takes the candidate maximising

    lambda * relevance(i) - (1 - lambda) * max_{j already picked} cosine(v_i, v_j)

so a near-copy of a passage already picked loses its relevance advantage. Relevance is rescaled to [0, 1]
(min-max) first, so that it is on the same footing as a cosine similarity whatever scored it (a cross-encoder
logit, a BM25 score, a fused hybrid score).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lorag_retrieval.score_fusion import min_max


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarities of the rows of ``vectors`` (a zero row is similar to nothing)."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be a 2-D array, got shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    return unit @ unit.T


def mmr(relevance: Sequence[float], vectors: np.ndarray, k: int, lambda_: float = 0.5) -> list[int]:
    """The indices of ``k`` candidates chosen by MMR, in the order chosen (best first).

    ``relevance[i]`` scores candidate ``i`` (higher is better, any scale); ``vectors[i]`` is its embedding.
    ``lambda_`` = 1 orders by relevance alone; 0 by diversity alone (after the most relevant first pick). Ties go
    to the earlier candidate, so with ``lambda_`` = 1 the result is the relevance order, stable.
    """
    n = len(relevance)
    if len(vectors) != n:
        raise ValueError(f"{n} relevance scores but {len(vectors)} vectors")
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
    if k <= 0 or n == 0:
        return []
    rel = np.asarray(min_max(relevance), dtype=np.float64)
    sims = cosine_matrix(np.asarray(vectors)).astype(np.float64)
    chosen: list[int] = []
    remaining = np.ones(n, dtype=bool)
    redundancy = np.full(n, -np.inf)  # max similarity to anything chosen so far
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        value = lambda_ * rel - (1.0 - lambda_) * penalty
        value[~remaining] = -np.inf
        best = int(np.argmax(value))  # argmax returns the first maximum: ties keep candidate order
        chosen.append(best)
        remaining[best] = False
        redundancy = np.maximum(redundancy, sims[best])
    return chosen


__all__ = ["cosine_matrix", "mmr"]
