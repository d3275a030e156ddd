"""The rule the root conftest enforces at collection: every test carries exactly one tier marker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from lorag_testing import TIERS, tier_problems

pytestmark = pytest.mark.unit


@dataclass
class Collected:
    """A collected test as the rule sees it: its node id and its markers (module's and its own)."""

    nodeid: str
    marks: list[pytest.MarkDecorator] = field(default_factory=list)

    def iter_markers(self, name: str | None = None) -> Iterator[pytest.Mark]:
        return (m.mark for m in self.marks if name is None or m.name == name)


def test_one_tier_passes_and_a_tier_given_twice_counts_once() -> None:
    items = [
        Collected("a.py::test_unit", [pytest.mark.unit]),
        Collected("a.py::test_twice", [pytest.mark.service, pytest.mark.service]),
        Collected("a.py::test_with_others", [pytest.mark.e2e, pytest.mark.parametrize("x", [1]), pytest.mark.gpu]),
    ]
    assert tier_problems(items) == []


def test_no_tier_and_two_tiers_are_listed() -> None:
    items = [
        Collected("a.py::test_none"),
        Collected("a.py::test_gpu_only", [pytest.mark.gpu]),
        Collected("a.py::test_two", [pytest.mark.e2e, pytest.mark.unit]),
        Collected("a.py::test_ok", [pytest.mark.unit]),
    ]
    assert tier_problems(items) == [
        "a.py::test_none: no tier",
        "a.py::test_gpu_only: no tier",
        "a.py::test_two: unit, e2e",
    ]


def test_every_tier_is_a_registered_marker(pytestconfig: pytest.Config) -> None:
    registered = {line.split(":")[0] for line in pytestconfig.getini("markers")}
    assert set(TIERS) <= registered
