"""The running batch: the rows decoding together and their row-aligned tensors, the KV cache first among them.

Rows join after a prefill of their own: the new rows' prompts are left-padded to one width (:func:`left_padded`),
and their cache is then left-padded to the running cache's length (or the running one to theirs) and stacked onto it
by rows. Rows leave by index selection, after which padding columns that no remaining row needs are cut. Joining and
cutting edit the cache's layers directly, so they need plain ``DynamicLayer`` layers (``joinable``); with any other
cache the decode loop admits new rows only once the batch is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lorag_generation.backends.transformers.rows import Row


def left_padded(prompts: Sequence[Sequence[int]], pad_token_id: int, device: Any) -> tuple[Any, Any, Any]:
    """Token ids [rows, width] with each prompt right-aligned, its attention mask (0 = padding) and the positions
    each real token takes (counted from its row's first real token)."""
    import torch

    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        n = len(prompt)
        ids[i, width - n :] = torch.tensor(prompt, dtype=torch.long)
        mask[i, width - n :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def returned_cache(out: Any) -> Any:
    """The KV cache a forward pass returned (transformers 5 names it ``cache``; older models ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class RunningBatch:
    """The rows decoding together, and per row (dimension 0 of each tensor): the KV cache, the attention mask
    (0 = left padding), the real tokens so far (= the position of the next one) and the token it feeds next."""

    def __init__(self, device: Any, cache_argument: str) -> None:
        self.device = device
        self.cache_argument = cache_argument
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: Any = None  # [B, T] long, 0 = left padding
        self.lengths: Any = None  # [B] real tokens so far = position of the next token
        self.next_tokens: Any = None  # [B, 1] the token each row feeds next
        self.joinable = True  # whether the model's cache can be merged across prefills (plain DynamicLayer)

    def join(self, rows: Sequence[Row], cache: Any, mask: Any, tokens: list[int]) -> None:
        """Add prefilled ``rows``: their cache and mask from the prefill, and the first token each sampled."""
        import torch
        from transformers.cache_utils import DynamicLayer

        lengths = mask.sum(-1)
        self.joinable = all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))
        if self.rows:
            self._merge(cache, mask, lengths, tokens)
        else:
            self.cache, self.mask, self.lengths = cache, mask, lengths
            self.next_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        self.rows.extend(rows)

    def _merge(self, cache: Any, mask: Any, lengths: Any, tokens: list[int]) -> None:
        """Left-pad the shorter of the running and the new cache to the same length and stack them by rows."""
        import torch

        functional = torch.nn.functional
        width = max(self.mask.shape[1], mask.shape[1])
        grow_old, grow_new = width - self.mask.shape[1], width - mask.shape[1]
        self.mask = torch.cat([functional.pad(self.mask, (grow_old, 0)), functional.pad(mask, (grow_new, 0))])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat(
                [functional.pad(old.keys, (0, 0, grow_old, 0)), functional.pad(new.keys, (0, 0, grow_new, 0))]
            )
            old.values = torch.cat(
                [functional.pad(old.values, (0, 0, grow_old, 0)), functional.pad(new.values, (0, 0, grow_new, 0))]
            )
        self.lengths = torch.cat([self.lengths, lengths])
        new_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)
        self.next_tokens = torch.cat([self.next_tokens, new_tokens])

    def step_inputs(self) -> dict[str, Any]:
        """The forward pass's inputs for one decode step of every row; the mask gains the column it feeds."""
        import torch

        ones = torch.ones((self.mask.shape[0], 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        return {
            "input_ids": self.next_tokens,
            "attention_mask": self.mask,
            "position_ids": self.lengths.unsqueeze(1),
            "use_cache": True,
            self.cache_argument: self.cache,
        }

    def advance(self, cache: Any, tokens: list[int]) -> None:
        """After a step: the cache it returned, and the token each row sampled (fed by the next step)."""
        import torch

        self.cache = cache
        self.lengths = self.lengths + 1
        self.next_tokens = torch.tensor(tokens, dtype=torch.long, device=self.device).unsqueeze(1)

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at ``indices`` (in order), and cut padding columns no remaining row needs."""
        if not indices:
            self.clear()
            return
        import torch

        index = torch.tensor(indices, device=self.device)
        self.rows = [self.rows[i] for i in indices]
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.lengths = self.lengths[index]
        self.next_tokens = self.next_tokens[index]
        if self.joinable:
            used = self.mask.sum(0).nonzero()
            start = int(used[0]) if used.numel() else 0
            if start > 0:
                self.mask = self.mask[:, start:]
                for layer in self.cache.layers:
                    layer.keys = layer.keys[:, :, start:, :]
                    layer.values = layer.values[:, :, start:, :]

    def clear(self) -> None:
        self.rows = []
        self.cache = self.mask = self.lengths = self.next_tokens = None
