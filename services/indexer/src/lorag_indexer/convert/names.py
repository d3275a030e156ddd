"""Collection and tenant names from requests, by the chassis' rules (``lorag_core.names``); reason INVALID_NAME."""

from __future__ import annotations

from lorag_core.names import COLLECTION, INVALID_NAME, METADATA_KEY, TENANT, normalize_collection
from lorag_indexer.domain import Violations

INVALID_METADATA_KEY = "INVALID_METADATA_KEY"


def check_collection(name: str, field: str, errors: Violations) -> str:
    """The stored form of collection ``name`` (first letter upper-cased); a violation in ``errors`` when it is bad."""
    errors.add_violation(COLLECTION.violation(name, field), INVALID_NAME)
    return normalize_collection(name)


def check_metadata_key(key: str, field: str, errors: Violations) -> bool:
    """True when ``key`` is a valid metadata key; else a violation (INVALID_METADATA_KEY) in ``errors``."""
    return not errors.add_violation(METADATA_KEY.violation(key, field), INVALID_METADATA_KEY)


def collection_name(name: str, field: str = "name") -> str:
    """A validated, normalised collection name from a request field."""
    errors = Violations()
    normalized = check_collection(name, field, errors)
    errors.raise_if_any()
    return normalized


def collection_and_tenant(collection: str, tenant: str) -> tuple[str, str]:
    """The request's ``collection`` (normalised) and ``tenant``, both checked (one error naming each bad field)."""
    errors = Violations()
    name = check_collection(collection, "collection", errors)
    errors.add_violation(TENANT.violation(tenant, "tenant"), INVALID_NAME)
    errors.raise_if_any()
    return name, tenant


__all__ = ["check_collection", "check_metadata_key", "collection_and_tenant", "collection_name"]
