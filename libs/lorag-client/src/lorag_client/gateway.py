"""Client for the gateway, lorag's public entry: ingest documents, delete them, retrieve passages."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from lorag.common.v1 import common_pb2
from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from lorag_client.base import ServiceClient
from lorag_client.indexer import metadata_value
from lorag_client.retrieval import retrieval_options



def document(
    *,
    tenant: str,
    collection: str,
    text: str | None = None,
    data: bytes | None = None,
    id: str = "",  # noqa: A002 - the contract's name
    source_uri: str = "",
    title: str = "",
    mime_type: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> pb.Document:
    """A Document for ingest: give ``text`` or ``data`` (bytes with a ``mime_type`` or a telling ``source_uri``)."""
    message = pb.Document(
        id=id,
        tenant=tenant,
        collection=collection,
        source_uri=source_uri,
        title=title,
        mime_type=mime_type,
        metadata={key: metadata_value(value) for key, value in (metadata or {}).items()},
    )
    if data is not None:
        message.data = data
    else:
        message.text = text or ""
    return message


class GatewayClient(ServiceClient):
    """Typed asyncio client of lorag.gateway.v1.GatewayService."""

    service = "gateway"
    service_name = pb.DESCRIPTOR.services_by_name["GatewayService"].full_name
    idempotent = False  # Ask generates; ingest is a stream: retried by the caller, per document

    def _make_stub(self) -> pb_grpc.GatewayServiceStub:
        return pb_grpc.GatewayServiceStub(self.channel)

    async def ingest(
        self,
        documents: Iterable[pb.Document] | AsyncIterable[pb.Document],
        *,
        chunking: pb.ChunkingOptions | None = None,
        force: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.IngestDocumentsResponse]:
        """Stream documents in; yields one ``result`` per document as it finishes, then the ``summary``."""

        async def requests() -> AsyncIterator[pb.IngestDocumentsRequest]:
            if isinstance(documents, AsyncIterable):
                async for doc in documents:
                    yield pb.IngestDocumentsRequest(document=doc, chunking=chunking, force=force)
            else:
                for doc in documents:
                    yield pb.IngestDocumentsRequest(document=doc, chunking=chunking, force=force)

        call = self.stub.IngestDocuments(requests(), timeout=timeout)
        async for response in call:
            yield response

    async def delete_documents(
        self, collection: str, tenant: str, document_ids: Sequence[str], *, timeout: float | None = None
    ) -> pb.DeleteDocumentsResponse:
        return await self.stub.DeleteDocuments(
            pb.DeleteDocumentsRequest(collection=collection, tenant=tenant, document_ids=list(document_ids)),
            timeout=self._timeout(timeout),
        )

    async def retrieve(
        self,
        query: str,
        *,
        collection: str,
        tenant: str,
        options: common_pb2.RetrievalOptions | None = None,
        timeout: float | None = None,
        **option_values: Any,
    ) -> pb.RetrieveResponse:
        """The best passages for ``query``; pass ``options`` or keyword values for :func:`retrieval_options`."""
        request = pb.RetrieveRequest(
            query=query, tenant=tenant, collection=collection, options=options or retrieval_options(**option_values)
        )
        return await self.stub.Retrieve(request, timeout=self._timeout(timeout))
