"""Dataset rows -> tokenized examples whose labels cover only what the model should learn to write.

Chat rows are rendered with the base model's chat template and the loss covers the assistant turns (their
content and end-of-turn marker); completion rows are `prompt + completion + eos` with the loss on the completion.
Everything else is labelled -100, the value PyTorch's cross-entropy ignores.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lorag_training.worker.spec import WorkerError

IGNORE_INDEX = -100


class DatasetError(WorkerError):
    def __init__(self, message: str) -> None:
        super().__init__("DATASET_ERROR", message)


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def read_rows(path: str | Path, fmt: str) -> list[dict[str, Any]]:
    """Read the normalised JSONL the dataset store wrote, checking each row has the format's shape."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read dataset {path}: {exc}") from exc
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"line {lineno}: invalid JSON ({exc.msg})") from exc
        _check_row(row, fmt, lineno)
        rows.append(row)
    if not rows:
        raise DatasetError(f"dataset {path} has no rows")
    return rows


def _check_row(row: Any, fmt: str, lineno: int) -> None:
    if not isinstance(row, dict):
        raise DatasetError(f"line {lineno}: a row must be a JSON object")
    if fmt == "completion":
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise DatasetError(f"line {lineno}: {key} must be a string")
        if not row["completion"]:
            raise DatasetError(f"line {lineno}: completion is empty")
        return
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"line {lineno}: messages must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise DatasetError(f"line {lineno}: messages[{i}].role must be system, user or assistant")
        if not isinstance(m.get("content"), str):
            raise DatasetError(f"line {lineno}: messages[{i}].content must be a string")
    if not any(m["role"] == "assistant" for m in messages):
        raise DatasetError(f"line {lineno}: no assistant message to learn from")


def file_digest(path: str | Path) -> str:
    """sha256 of the dataset file as trained on (lineage: which bytes produced the adapter)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> Example:
    """Render with the chat template; label the characters of each assistant turn, mapped to tokens by offsets.

    Assistant spans are found by rendering the conversation up to each turn (with and without it), so the mask
    follows whatever the template adds around a turn; offsets make it independent of how BPE merges at the edges.
    """
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        upto_prev = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        start = len(upto_prev)
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not full.startswith(upto):
            raise DatasetError("the base model's chat template does not render conversations incrementally")
        if not i:  # an opening assistant turn: learn its content, not the template's preamble
            start = max(0, upto.rfind(m["content"])) if m["content"] else len(upto)
        spans.append((start, len(upto)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=max_length)
    labels = []
    for tok, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        inside = any(s <= a and b <= e and b > a for s, e in spans)
        labels.append(tok if inside else IGNORE_INDEX)
    return Example(list(enc["input_ids"]), labels)


def encode_completion(tokenizer: Any, prompt: str, completion: str, max_length: int) -> Example:
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"] if prompt else []
    if prompt_ids and tokenizer.eos_token_id is not None and prompt_ids[-1] == tokenizer.eos_token_id:
        prompt_ids = prompt_ids[:-1]  # some tokenizers append eos to every encode; the prompt continues
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
    ids = (prompt_ids + completion_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:max_length]
    return Example(ids, labels)


def encode_rows(tokenizer: Any, rows: list[dict[str, Any]], fmt: str, max_length: int) -> tuple[list[Example], int]:
    """Encode every row; returns the examples with something to learn and how many were dropped (all prompt
    after truncation)."""
    examples, dropped = [], 0
    for row in rows:
        if fmt == "chat":
            ex = encode_chat(tokenizer, row["messages"], max_length)
        else:
            ex = encode_completion(tokenizer, row["prompt"], row["completion"], max_length)
        if all(label == IGNORE_INDEX for label in ex.labels[1:]):
            dropped += 1
            continue
        examples.append(ex)
    if not examples:
        raise DatasetError(
            f"no row has a trainable token within max_length={max_length}; raise max_length or shorten prompts"
        )
    return examples, dropped


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/eval split: a seeded shuffle, the first round(n*fraction) rows held out (at least one
    when the fraction is positive, never all)."""
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = min(n - 1, max(1, round(n * fraction)))
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row of the batch; padding is masked out of attention and labels."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass(frozen=True)
class Schedule:
    """How micro-batches group into optimizer steps: an epoch is ceil(batches / accumulation) steps, the last one
    possibly with fewer micro-batches."""

    batches_per_epoch: int
    accumulation: int
    total_steps: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.batches_per_epoch / self.accumulation)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, first micro-batch index) where optimizer step `step` (0-based) starts."""
        return step // self.steps_per_epoch, (step % self.steps_per_epoch) * self.accumulation

    def epoch_at(self, steps_done: int) -> float:
        return steps_done / self.steps_per_epoch


def make_schedule(n_train_per_rank: int, batch_size: int, accumulation: int, epochs: float, max_steps: int) -> Schedule:
    batches = max(1, math.ceil(n_train_per_rank / batch_size))
    steps_per_epoch = math.ceil(batches / accumulation)
    total = max_steps if max_steps > 0 else max(1, math.ceil(epochs * steps_per_epoch))
    return Schedule(batches, accumulation, total)
