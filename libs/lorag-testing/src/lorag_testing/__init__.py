"""Support for lorag's own test suites, kept out of every shipped package and image.

Launchers of real processes the tests need beside the services (Jaeger), fake HTTP peers built on
pytest-httpserver (a TEI server, an OpenAI-protocol server) for the backends that speak HTTP, and the rule that
every test carries exactly one tier marker (enforced by the root conftest at collection).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import pytest

TIERS = ("unit", "service", "e2e")
"""The test tiers, cheapest first; registered in the root pyproject.toml and described in docs/development.md."""


class Marked(Protocol):
    """What the tier rule reads of a collected test (a ``pytest.Item`` has both)."""

    @property
    def nodeid(self) -> str: ...

    def iter_markers(self, name: str | None = None) -> Iterator[pytest.Mark]: ...


def tier_problems(items: Iterable[Marked]) -> list[str]:
    """One line per test that has no tier marker or more than one: ``"<node id>: no tier"``,
    ``"<node id>: unit, service"``. A tier given twice (module and function) counts once."""
    problems = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS}, key=TIERS.index)
        if len(tiers) != 1:
            problems.append(f"{item.nodeid}: {', '.join(tiers) or 'no tier'}")
    return problems
