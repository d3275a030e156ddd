"""Choosing each row's next token as ``model.generate`` would, every row with its own settings and generator."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from lorag_generation.backends.base import SamplingSettings


def sample_token(logits: Any, sampling: SamplingSettings, seen: Any | None, generator: Any | None) -> int:
    """Choose the next token from one row's logits (shape [vocab]) as ``model.generate`` would.

    Order as in transformers' processors: repetition penalty (over ``seen``, the prompt and completion tokens),
    then greedy argmax at temperature 0, else temperature, top-k, top-p and a draw with ``generator``.
    """
    import torch

    scores = logits.float()
    if sampling.repetition_penalty != 1.0 and seen is not None:
        penalised = torch.where(scores < 0, scores * sampling.repetition_penalty, scores / sampling.repetition_penalty)
        scores = torch.where(seen, penalised, scores)
    if sampling.greedy:
        return int(scores.argmax())
    scores = scores / sampling.temperature
    vocab = scores.shape[-1]
    if 0 < sampling.top_k < vocab:
        threshold = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < threshold, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        remove_sorted = cumulative <= (1 - sampling.top_p)
        remove_sorted[-1] = False  # always keep the most likely token
        remove = remove_sorted.scatter(0, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    probabilities = scores.softmax(-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


class RowSampler:
    """One request's sampling state: its settings, its own seeded ``torch.Generator`` (when it samples) and, with a
    repetition penalty, the mask of the tokens it has seen (prompt, then completion).

    A request without a seed draws one, so concurrent requests never share a random stream.
    """

    def __init__(self, sampling: SamplingSettings, prompt_ids: Sequence[int], *, device: Any, vocab_size: int) -> None:
        import torch

        self.sampling = sampling
        self.generator: Any = None
        self.seen: Any = None
        if not sampling.greedy:
            seed = sampling.seed if sampling.seed is not None else random.getrandbits(63)
            self.generator = torch.Generator(device=device).manual_seed(seed & 0xFFFFFFFFFFFFFFFF)
        if sampling.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            self.seen[torch.tensor(list(prompt_ids), device=device)] = True

    @property
    def takes_argmax(self) -> bool:
        """Greedy without a penalty: the batch's one argmax serves this row."""
        return self.sampling.greedy and self.sampling.repetition_penalty == 1.0

    def observe(self, token: int) -> None:
        """Count ``token`` as seen by the repetition penalty."""
        if self.seen is not None:
            self.seen[token] = True

    def sample(self, logits: Any) -> int:
        return sample_token(logits, self.sampling, self.seen, self.generator)


def sample_rows(logits: Any, samplers: Sequence[RowSampler]) -> list[int]:
    """Every row's next token from the batch's last-position logits ([rows, vocab]): one argmax when all rows are
    greedy without a penalty, else each row drawn with its own sampler."""
    if all(sampler.takes_argmax for sampler in samplers):
        tokens: list[int] = logits.argmax(-1).tolist()
        return tokens
    return [sampler.sample(logits[i]) for i, sampler in enumerate(samplers)]
