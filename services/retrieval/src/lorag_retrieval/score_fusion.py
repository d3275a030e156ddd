"""Score fusion: turning several rankings of the same candidates into one.

Pure functions over plain lists, shared by the rerankers and the benchmark. Every function takes scores in the
candidates' order (higher is better) and returns one fused score per candidate in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The usual reciprocal-rank-fusion constant (Cormack et al., 2009): it damps the weight of the very top ranks.
RRF_K = 60


def ranks(scores: Sequence[float]) -> list[int]:
    """Each candidate's rank (0 = best) under ``scores``; ties keep the input order, so the sort is stable."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    result = [0] * len(scores)
    for rank, index in enumerate(order):
        result[index] = rank
    return result


def rrf(rankings: Sequence[Sequence[int]], *, k: float = RRF_K, weights: Sequence[float] | None = None) -> list[float]:
    """Reciprocal-rank fusion of several rankings (each a rank per candidate, 0 = best): sum of w / (k + rank + 1)."""
    if not rankings:
        return []
    size = len(rankings[0])
    if any(len(r) != size for r in rankings):
        raise ValueError("every ranking must rank the same candidates")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    return [sum(w / (k + r[i] + 1) for w, r in zip(weights, rankings, strict=True)) for i in range(size)]


def min_max(scores: Sequence[float]) -> list[float]:
    """Scores rescaled to [0, 1] (best 1, worst 0); all equal (or a single score) maps to 1."""
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return [0.0] * len(scores)
    low, high = min(finite), max(finite)
    if high - low <= 0:
        return [1.0 if math.isfinite(s) else 0.0 for s in scores]
    return [(s - low) / (high - low) if math.isfinite(s) else 0.0 for s in scores]


def weighted_sum(signals: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """Relative-score fusion: each signal min-max normalised, then summed with ``weights``."""
    if len(signals) != len(weights):
        raise ValueError("one weight per signal")
    if not signals:
        return []
    normalised = [min_max(s) for s in signals]
    size = len(normalised[0])
    if any(len(s) != size for s in normalised):
        raise ValueError("every signal must score the same candidates")
    return [sum(w * s[i] for w, s in zip(weights, normalised, strict=True)) for i in range(size)]


__all__ = ["RRF_K", "min_max", "ranks", "rrf", "weighted_sum"]
