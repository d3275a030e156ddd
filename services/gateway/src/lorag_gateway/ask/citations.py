"""Which passages an answer cites: ``[n]`` references, including ``[1, 2]``, ``[1][2]`` and ranges ``[1-3]``.

Only numbers of passages that were given to the model count; a reference to any other number (a hallucinated
``[7]`` with five passages, a year in brackets) is ignored.
"""

from __future__ import annotations

import re

# A bracket holding only numbers, separated by commas, semicolons or spaces, with optional ranges (- – —).
_GROUP = re.compile(r"\[\s*(\d+(?:\s*(?:[-\u2013\u2014]|,|;|\s)\s*\d+)*)\s*\]")
_ITEM = re.compile(r"(\d+)(?:\s*[-\u2013\u2014]\s*(\d+))?")


def cited_numbers(answer: str, passage_count: int) -> set[int]:
    """The passage numbers (1 to ``passage_count``) that ``answer`` refers to."""
    cited: set[int] = set()
    for group in _GROUP.finditer(answer):
        for item in _ITEM.finditer(group.group(1)):
            first = int(item.group(1))
            last = int(item.group(2)) if item.group(2) else first
            if first > last:
                continue
            # Clamp a range to the passages given, so "[1-999999]" costs nothing.
            cited.update(range(max(first, 1), min(last, passage_count) + 1))
    return cited


__all__ = ["cited_numbers"]
