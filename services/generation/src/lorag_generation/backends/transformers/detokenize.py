"""Incremental detokenization: the text of a growing token sequence, delivered as whole characters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class IncrementalDetokenizer:
    """Turns a growing token sequence into text deltas holding whole characters only.

    Each step decodes a short window (the tokens since the last emitted delta plus a few before it, for context such
    as SentencePiece's leading-space rule) rather than the whole text, and holds text back while it ends in an
    incomplete UTF-8 sequence (decoded as U+FFFD). ``context`` primes the window with the prompt's last tokens.
    """

    def __init__(self, tokenizer: Any, context: Sequence[int] = ()) -> None:
        self._decode = tokenizer.decode
        self._ids: list[int] = list(context[-4:])
        self._prefix = 0
        self._read = len(self._ids)

    def _window(self) -> tuple[str, str]:
        prefix_text: str = self._decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        full_text: str = self._decode(self._ids[self._prefix :], skip_special_tokens=True)
        return prefix_text, full_text

    def add(self, token_id: int) -> str:
        """Add one token; return the new whole characters (possibly empty while a character is incomplete)."""
        self._ids.append(token_id)
        prefix_text, full_text = self._window()
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Text still held at the end; an incomplete trailing character is dropped rather than sent as U+FFFD."""
        prefix_text, full_text = self._window()
        self._prefix = self._read = len(self._ids)
        if len(full_text) <= len(prefix_text):
            return ""
        return full_text[len(prefix_text) :].rstrip("\ufffd")
