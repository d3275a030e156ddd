"""Unit tier: Weaviate's exceptions classified by type and status (HTTP or gRPC), text only where nothing else is."""

from __future__ import annotations

import grpc
import httpx
import pytest
from weaviate.exceptions import (
    InsufficientPermissionsError,
    UnexpectedStatusCodeError,
    WeaviateClosedClientError,
    WeaviateDeleteManyError,
    WeaviateQueryError,
)

from lorag_core.errors import AlreadyExists, LoragError, NotFound, Unavailable
from lorag_indexer.backends.weaviate import errors

pytestmark = pytest.mark.unit


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details, debug_error_string="")


def raised_while_handling(outer: Exception, inner: BaseException) -> Exception:
    """``outer`` as the client raises it: inside ``except`` of ``inner`` (so ``inner`` is its context)."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - the client raises this way; the context is what is under test
    except Exception as exc:
        return exc


def http_error(status: int, body: str = "") -> UnexpectedStatusCodeError:
    request = httpx.Request("GET", "http://weaviate/v1/schema/Docs")
    return UnexpectedStatusCodeError("Get schema", httpx.Response(status, text=body, request=request))


def classify(exc: BaseException, collection: str | None = "Docs", tenant: str | None = "acme") -> LoragError | None:
    return errors.map_error(exc, "search", collection, tenant)


def test_http_status_decides_rest_failures():
    missing = classify(http_error(404))
    assert isinstance(missing, NotFound) and missing.reason == "COLLECTION_NOT_FOUND"
    denied = classify(InsufficientPermissionsError(httpx.Response(403, request=httpx.Request("GET", "http://w/"))))
    assert isinstance(denied, Unavailable) and denied.reason == errors.PERMISSION_DENIED
    down = classify(http_error(503))
    assert isinstance(down, Unavailable) and errors.is_unreachable(down)
    taken = classify(http_error(422, '{"error": [{"message": "class name Docs already exists"}]}'))
    assert isinstance(taken, AlreadyExists)
    other = classify(http_error(500, "boom"))
    assert isinstance(other, Unavailable) and other.reason == errors.DEPENDENCY_ERROR


def test_grpc_status_on_the_chain_decides_grpc_failures():
    down = classify(
        raised_while_handling(WeaviateQueryError("x", "GRPC search"), rpc_error(grpc.StatusCode.UNAVAILABLE))
    )
    assert errors.is_unreachable(down)
    code = grpc.StatusCode.PERMISSION_DENIED
    denied = classify(raised_while_handling(WeaviateDeleteManyError("[PERMISSION_DENIED] no"), rpc_error(code)))
    assert isinstance(denied, Unavailable) and denied.reason == errors.PERMISSION_DENIED
    assert errors.http_status(raised_while_handling(WeaviateQueryError("x", "GRPC"), rpc_error(code))) is None


def test_weaviate_grpc_not_found_is_known_only_by_its_sentence():
    unknown = grpc.StatusCode.UNKNOWN
    tenant = classify(
        raised_while_handling(WeaviateQueryError('tenant not found: "acme"', "GRPC search"), rpc_error(unknown))
    )
    assert isinstance(tenant, NotFound) and tenant.reason == "TENANT_NOT_FOUND"
    assert tenant.metadata == {"collection": "Docs", "tenant": "acme"}
    gone = classify(
        raised_while_handling(WeaviateQueryError("could not find class Docs in schema", "GRPC"), rpc_error(unknown))
    )
    assert isinstance(gone, NotFound) and gone.reason == "COLLECTION_NOT_FOUND"


def test_transport_failures_are_unreachable_and_bugs_are_not_weaviate_s():
    assert errors.is_unreachable(classify(WeaviateClosedClientError()))
    assert errors.is_unreachable(classify(httpx.ConnectError("refused")))
    assert classify(ValueError("a bug in lorag")) is None
    own = NotFound("x", reason="TENANT_NOT_FOUND")
    assert classify(own) is own
