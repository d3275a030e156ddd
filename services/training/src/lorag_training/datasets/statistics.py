"""Token lengths of dataset rows under the base model's tokenizer, and their summary statistics.

Rows are measured as they will be trained: chat rows rendered with the model's chat template, completion rows as
prompt + completion + end-of-sequence. Tokenizers are loaded once per model and kept.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from lorag_core.errors import NotFound
from lorag_models import ModelNotFound, resolve_model

# Histogram bucket upper bounds, in tokens (the last bucket holds longer rows).
DEFAULT_BOUNDS = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
_BATCH = 256

_tokenizers: dict[str, Any] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Statistics:
    """TokenStatistics in domain form."""

    tokenizer: str
    total_tokens: int
    min_tokens: int
    max_tokens: int
    mean_tokens: float
    p50_tokens: int
    p95_tokens: int
    bounds: tuple[int, ...]
    counts: list[int] = field(default_factory=list)
    max_length: int = 2048
    truncated_rows: int = 0


def load_tokenizer(base_model: str) -> tuple[Any, str]:
    """The tokenizer of ``base_model`` (cached) and the model id it came from; NOT_FOUND when it cannot be loaded."""
    try:
        resolved = resolve_model(base_model)
    except ModelNotFound as exc:
        raise NotFound(
            message=f"base model {base_model!r} cannot be found: {exc}",
            reason="BASE_MODEL_NOT_FOUND",
            metadata={"base_model": base_model},
        ) from exc
    with _lock:
        cached = _tokenizers.get(resolved.path)
        if cached is None:
            from transformers import AutoTokenizer

            try:
                cached = AutoTokenizer.from_pretrained(resolved.path)
            except (OSError, ValueError) as exc:
                raise NotFound(
                    message=f"the tokenizer of base model {base_model!r} cannot be loaded: {exc}",
                    reason="BASE_MODEL_NOT_FOUND",
                    metadata={"base_model": base_model},
                ) from exc
            _tokenizers[resolved.path] = cached
    return cached, resolved.model_id


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def token_lengths(tokenizer: Any, rows: list[dict[str, Any]], fmt: str) -> list[int]:
    """The trained length of each row, in tokens."""
    lengths: list[int] = []
    eos = 1 if tokenizer.eos_token_id is not None else 0
    for start in range(0, len(rows), _BATCH):
        batch = rows[start : start + _BATCH]
        if fmt == "chat":
            texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in batch]
            encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
            lengths.extend(len(ids) for ids in encoded)
        else:
            prompts = tokenizer([r["prompt"] for r in batch])["input_ids"]
            completions = tokenizer([r["completion"] for r in batch], add_special_tokens=False)["input_ids"]
            lengths.extend(len(p) + len(c) + eos for p, c in zip(prompts, completions, strict=True))
    return lengths


def _percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def summarise(
    lengths: list[int], tokenizer_name: str, max_length: int, bounds: tuple[int, ...] = DEFAULT_BOUNDS
) -> Statistics:
    """Totals, extremes, percentiles, a histogram (bucket i: bounds[i-1] < v <= bounds[i]) and truncations."""
    counts = [0] * (len(bounds) + 1)
    for value in lengths:
        index = next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))
        counts[index] += 1
    if not lengths:
        return Statistics(tokenizer_name, 0, 0, 0, 0.0, 0, 0, bounds, counts, max_length, 0)
    ordered = sorted(lengths)
    return Statistics(
        tokenizer=tokenizer_name,
        total_tokens=sum(lengths),
        min_tokens=ordered[0],
        max_tokens=ordered[-1],
        mean_tokens=sum(lengths) / len(lengths),
        p50_tokens=_percentile(ordered, 0.5),
        p95_tokens=_percentile(ordered, 0.95),
        bounds=bounds,
        counts=counts,
        max_length=max_length,
        truncated_rows=sum(1 for v in lengths if v > max_length),
    )
