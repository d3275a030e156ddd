"""Stop sequences applied to streamed text the same way by every backend.

Text that could be the start of a stop sequence is held back until it either completes the sequence (generation
ends; the sequence is not emitted) or diverges from every sequence (it is released). So a client never sees a
fragment of a stop sequence, and the concatenation of deltas is exactly the final text.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feeds decoded text through; ``feed`` returns what may be emitted now and the stop sequence matched, if any."""

    def __init__(self, stop_sequences: Sequence[str]) -> None:
        self._stops = tuple(s for s in stop_sequences if s)
        self._pending = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, str | None]:
        """Add newly decoded text; return (text safe to emit, the matched stop sequence or None).

        After a match, everything from the stop sequence on is dropped and later calls emit nothing.
        """
        if self.matched is not None:
            return "", self.matched
        if not self._stops:
            return text, None
        buffer = self._pending + text
        first = None
        for stop in self._stops:
            at = buffer.find(stop)
            if at != -1 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self.matched = first[1]
            self._pending = ""
            return buffer[: first[0]], first[1]
        hold = self._held_suffix(buffer)
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], None

    def flush(self) -> str:
        """Release held-back text when generation ends without a match."""
        pending, self._pending = self._pending, ""
        return "" if self.matched is not None else pending

    def _held_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of some stop sequence."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
