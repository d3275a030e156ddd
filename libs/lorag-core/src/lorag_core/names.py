"""The name rules every service enforces, in one place: tenants, collections, metadata keys, and the names of
datasets, jobs' adapters and adapters, and registry aliases.

A rule is a regular expression plus the sentence a caller reads when a name breaks it. Services check names at
their proto edge with :meth:`NameRule.violation` (to collect several problems into one INVALID_ARGUMENT) or
:meth:`NameRule.check` (to raise at once); the reason is always ``INVALID_NAME`` unless a caller passes its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lorag_core.errors import FieldViolation, InvalidArgument

INVALID_NAME = "INVALID_NAME"


@dataclass(frozen=True)
class NameRule:
    """One kind of name: ``pattern`` must match the whole name; ``description`` completes "must be ..."."""

    kind: str
    pattern: re.Pattern[str]
    description: str

    def matches(self, name: str) -> bool:
        return self.pattern.fullmatch(name) is not None

    def violation(self, name: str, field: str) -> FieldViolation | None:
        """Why ``name`` is not a valid name of this kind (``None`` when it is), naming request field ``field``."""
        if self.matches(name):
            return None
        if not name:
            return FieldViolation(field, f"a {self.kind} name is required")
        return FieldViolation(field, f"{name[:80]!r} is not a valid {self.kind} name: it must be {self.description}")

    def check(self, name: str, field: str, reason: str = INVALID_NAME) -> str:
        """``name`` unchanged, or INVALID_ARGUMENT naming ``field``."""
        problem = self.violation(name, field)
        if problem is not None:
            raise InvalidArgument.of(problem.field, problem.description, reason=reason)
        return name


TENANT = NameRule("tenant", re.compile(r"[A-Za-z0-9_-]{1,64}"), "1 to 64 letters, digits, hyphens or underscores")
COLLECTION = NameRule(
    "collection",
    re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}"),
    "a letter followed by up to 63 letters, digits or underscores",
)
METADATA_KEY = NameRule(
    "metadata key",
    re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}"),
    "a letter or underscore followed by up to 62 letters, digits or underscores",
)
#: Datasets, adapters, and the adapter a training job registers share one rule (no "@": it starts a reference).
RESOURCE = NameRule("resource", re.compile(r"[A-Za-z0-9._-]{1,128}"), "1 to 128 letters, digits, '.', '-' or '_'")
DATASET = NameRule("dataset", RESOURCE.pattern, RESOURCE.description)
ADAPTER = NameRule("adapter", RESOURCE.pattern, RESOURCE.description)

_ALIAS_CHARS = re.compile(r"[A-Za-z0-9_-]{1,255}")
_RESERVED_ALIAS = re.compile(r"latest|\d+|[vV]\d+", re.IGNORECASE)


def normalize_collection(name: str) -> str:
    """The form Weaviate stores a collection name in, its first letter upper-cased: "docs" and "Docs" are one."""
    return name[:1].upper() + name[1:]


def alias_violation(alias: str, field: str = "alias") -> FieldViolation | None:
    """Why ``alias`` cannot name a registry alias: letters, digits, "_" and "-", at most 255; never "latest", all
    digits, or "v" + digits (those name versions, so "name@3" and "name@v3" always mean a version)."""
    if not alias:
        return FieldViolation(field, "an alias is required")
    if not _ALIAS_CHARS.fullmatch(alias):
        return FieldViolation(field, "only letters, digits, '_' and '-' are allowed (at most 255)")
    if _RESERVED_ALIAS.fullmatch(alias):
        return FieldViolation(field, f"{alias!r} is reserved: 'latest', digits and 'v'+digits name versions")
    return None


def check_alias(alias: str, field: str = "alias") -> str:
    """``alias`` unchanged, or INVALID_ARGUMENT (reason ``INVALID_NAME``) saying which rule it breaks."""
    problem = alias_violation(alias, field)
    if problem is not None:
        raise InvalidArgument.of(problem.field, problem.description, reason=INVALID_NAME)
    return alias


__all__ = [
    "ADAPTER",
    "COLLECTION",
    "DATASET",
    "INVALID_NAME",
    "METADATA_KEY",
    "RESOURCE",
    "TENANT",
    "NameRule",
    "alias_violation",
    "check_alias",
    "normalize_collection",
]
