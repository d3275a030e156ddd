"""List RPCs' paging, one codec for every service (AIP-158).

A page token is opaque to callers: URL-safe base64 of a small JSON object naming the RPC that issued it
(``kind``), what the listing was scoped to (``scope``: the parent or a fingerprint of the filters), and the cursor
to continue from (the last name returned, or an offset). A token garbled, or issued by another RPC or for another
scope, is INVALID_ARGUMENT with reason ``INVALID_PAGE_TOKEN``, never a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
import json

from lorag_core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_VERSION = 1

Cursor = str | int


def page_size(
    value: int, *, field: str = "page_size", default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE
) -> int:
    """The page size to use: 0 means ``default``; 1 to ``maximum`` as asked; anything else INVALID_ARGUMENT."""
    if value < 0 or value > maximum:
        raise InvalidArgument.of(field, f"must be from 0 to {maximum:,}", reason="PAGE_SIZE_OUT_OF_RANGE")
    return value or default


def encode_page_token(kind: str, scope: str, cursor: Cursor) -> str:
    """A token continuing RPC ``kind`` over ``scope`` after ``cursor``."""
    raw = json.dumps({"v": _VERSION, "k": kind, "s": scope, "a": cursor}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, kind: str, scope: str, *, field: str = "page_token") -> Cursor | None:
    """The cursor ``token`` continues after; ``None`` for an empty token (the first page)."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        valid = (
            isinstance(data, dict)
            and data.get("v") == _VERSION
            and data.get("k") == kind
            and data.get("s") == scope
            and isinstance(data.get("a"), (str, int))
            and not isinstance(data.get("a"), bool)
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        valid = False
    if not valid:
        raise InvalidArgument.of(
            field, "is not a page token this RPC issued for this request", reason="INVALID_PAGE_TOKEN"
        )
    cursor: Cursor = data["a"]
    return cursor


def decode_offset(token: str, kind: str, scope: str, *, field: str = "page_token") -> int:
    """For offset-paged listings: the offset ``token`` continues from (0 for the first page)."""
    cursor = decode_page_token(token, kind, scope, field=field)
    if cursor is None:
        return 0
    if not isinstance(cursor, int) or cursor < 0:
        raise InvalidArgument.of(
            field, "is not a page token this RPC issued for this request", reason="INVALID_PAGE_TOKEN"
        )
    return cursor


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "decode_offset",
    "decode_page_token",
    "encode_page_token",
    "page_size",
]
