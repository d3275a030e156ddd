"""Client for the retrieval service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from lorag.common.v1 import common_pb2
from lorag.retrieval.v1 import retrieval_service_pb2 as pb
from lorag.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc
from lorag_client.base import ServiceClient

_MODES = {
    "vector": common_pb2.SEARCH_MODE_VECTOR,
    "dense": common_pb2.SEARCH_MODE_VECTOR,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}
_FUSIONS = {"ranked": common_pb2.FUSION_TYPE_RANKED, "relative_score": common_pb2.FUSION_TYPE_RELATIVE_SCORE}

Mode = Literal["vector", "dense", "keyword", "hybrid"]
Fusion = Literal["ranked", "relative_score"]


def retrieval_options(
    *,
    mode: Mode | None = None,
    alpha: float | None = None,
    fusion: Fusion | None = None,
    filter: common_pb2.Filter | None = None,  # noqa: A002 - the contract's name
    top_k: int | None = None,
    candidate_count: int | None = None,
    rerank: bool | None = None,
    mmr: bool = False,
    mmr_lambda: float | None = None,
) -> common_pb2.RetrievalOptions:
    """A ``RetrievalOptions`` from keyword arguments; ``None`` leaves a field unset (the service's default).
    ``mode`` is ``"vector"`` (or ``"dense"``), ``"keyword"`` or ``"hybrid"``."""
    options = common_pb2.RetrievalOptions(mmr=mmr)
    if mode is not None:
        options.mode = _MODES[mode]
    if fusion is not None:
        options.fusion = _FUSIONS[fusion]
    if filter is not None:
        options.filter.CopyFrom(filter)
    for name, value in (
        ("alpha", alpha),
        ("top_k", top_k),
        ("candidate_count", candidate_count),
        ("rerank", rerank),
        ("mmr_lambda", mmr_lambda),
    ):
        if value is not None:
            setattr(options, name, value)
    return options


class RetrievalClient(ServiceClient):
    """Retrieve chunks and rerank passages through the retrieval service (both RPCs are reads, safe to retry)."""

    service = "retrieval"
    descriptor = pb.DESCRIPTOR.services_by_name["RetrievalService"]

    options = staticmethod(retrieval_options)  # RetrievalClient.options(**fields), as documented

    _stub: pb_grpc.RetrievalServiceAsyncStub

    def _make_stub(self) -> pb_grpc.RetrievalServiceAsyncStub:
        return pb_grpc.RetrievalServiceStub(self.channel)

    async def retrieve(
        self,
        query: str,
        *,
        tenant: str,
        collection: str,
        options: common_pb2.RetrievalOptions | None = None,
        timeout: float | None = None,
        **option_kwargs: object,
    ) -> pb.RetrieveResponse:
        """The ``top_k`` chunks of ``tenant`` in ``collection`` best matching ``query``.

        Pass a ``RetrievalOptions`` as ``options``, or its fields as keyword arguments (``mode="keyword"``,
        ``top_k=10``, ``rerank=False``, ``mmr=True`` ...; see :meth:`options`), not both.
        """
        if options is not None and option_kwargs:
            raise TypeError("pass either options or option keyword arguments, not both")
        if options is None:
            options = retrieval_options(**option_kwargs)  # type: ignore[arg-type]  # checked by its signature at run time
        request = pb.RetrieveRequest(query=query, tenant=tenant, collection=collection, options=options)
        return await self._unary(self._stub.Retrieve, request, timeout=timeout)

    async def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        top_n: int | None = None,
        truncate: bool | None = None,
        timeout: float | None = None,
    ) -> pb.RerankResponse:
        """``passages`` scored against ``query`` by the service's reranker, best first (at most ``top_n``)."""
        request = pb.RerankRequest(query=query, passages=list(passages))
        if top_n is not None:
            request.top_n = top_n
        if truncate is not None:
            request.truncate = truncate
        return await self._unary(self._stub.Rerank, request, timeout=timeout)
