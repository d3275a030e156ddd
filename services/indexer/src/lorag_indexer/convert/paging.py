"""List RPCs' paging through the chassis' codec (``lorag_core.pagination``): the indexer's listings continue after
a name (collection, tenant or document id), so their tokens carry a string cursor."""

from __future__ import annotations

from lorag_core import pagination
from lorag_core.errors import InvalidArgument
from lorag_core.pagination import encode_page_token, page_size


def decode_page_token(token: str, kind: str, scope: str, field: str = "page_token") -> str | None:
    """The name ``token`` continues after; None for an empty token. Refuses tokens another RPC or parent issued."""
    cursor = pagination.decode_page_token(token, kind, scope, field=field)
    if cursor is None or isinstance(cursor, str):
        return cursor
    raise InvalidArgument.of(field, "is not a page token this RPC issued for this request", reason="INVALID_PAGE_TOKEN")


__all__ = ["decode_page_token", "encode_page_token", "page_size"]
