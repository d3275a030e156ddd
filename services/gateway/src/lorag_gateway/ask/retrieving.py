"""The gateway's one way to call the retrieval service, shared by Retrieve and Ask.

Retrieve and Ask send the same ``RetrieveRequest`` and map its errors the same way; only the field names differ
(Ask's ``question`` and ``retrieval`` are Retrieve's ``query`` and ``options``), which ``field_map`` renames.
"""

from __future__ import annotations

from lorag.common.v1 import common_pb2
from lorag.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from lorag_client import RetrievalClient
from lorag_core.downstream import FieldMap, downstream_errors


async def retrieve(
    client: RetrievalClient,
    query: str,
    *,
    tenant: str,
    collection: str,
    options: common_pb2.RetrievalOptions,
    field_map: FieldMap | None = None,
    timeout: float | None = None,
) -> retrieval_pb.RetrieveResponse:
    """The retrieval service's answer; its errors re-raised as lorag errors (UNAVAILABLE names "retrieval")."""
    request = retrieval_pb.RetrieveRequest(query=query, tenant=tenant, collection=collection, options=options)
    async with downstream_errors("retrieval", field_map):
        return await client.stub.Retrieve(request, timeout=timeout)


__all__ = ["retrieve"]
