"""Client for the gateway, lorag's public entry: ingest documents, delete them, retrieve passages, ask questions.

async with GatewayClient() as gateway:
    answer = await gateway.ask("What is LoRA?", collection="docs", tenant="acme", top_k=3, temperature=0)
    print(answer.answer, [c.document_id for c in answer.cited])

    async for item in gateway.ask_stream("What is LoRA?", collection="docs", tenant="acme"):
        if isinstance(item, AskDelta):
            print(item.text, end="", flush=True)   # as the model decodes it
        else:
            answer = item                           # the Answer: citations, usage, timing
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lorag.common.v1 import common_pb2
from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from lorag_client.base import ServiceClient
from lorag_client.indexer import metadata_value
from lorag_client.retrieval import retrieval_options
from lorag_client.sampling import FINISH_REASONS, sampling_params


@dataclass(frozen=True)
class Citation:
    """A passage given to the model: where it comes from (``document_id``, ``char_start``:``char_end`` of the
    document's text), its score, its text, and whether the answer cites it as ``[passage_number]``."""

    passage_number: int
    document_id: str
    chunk_id: str
    char_start: int
    char_end: int
    score: float
    title: str
    source_uri: str
    text: str
    cited_in_answer: bool

    @classmethod
    def from_pb(cls, message: pb.Citation) -> Citation:
        return cls(
            passage_number=message.passage_number,
            document_id=message.document_id,
            chunk_id=message.chunk_id,
            char_start=message.char_start,
            char_end=message.char_end,
            score=message.score,
            title=message.title,
            source_uri=message.source_uri,
            text=message.text,
            cited_in_answer=message.cited_in_answer,
        )


@dataclass(frozen=True)
class Usage:
    """Tokens the model read and produced (zero when it was not called)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class AskTiming:
    """Where an answer's time went, in nanoseconds: the gateway's stages and the services' own breakdowns."""

    retrieve_ns: int
    generate_ns: int
    time_to_first_token_ns: int
    total_ns: int
    retrieval: dict[str, int] = field(default_factory=dict)  # embed_ns, search_ns, rerank_ns, mmr_ns, total_ns
    generation: dict[str, int] = field(default_factory=dict)  # queue_ns, inference_ns, time_to_first_token_ns, total_ns

    @property
    def gateway_overhead_ns(self) -> int:
        """End-to-end time minus the stage times: what the gateway itself added (validation, prompt, forwarding)."""
        return self.total_ns - self.retrieve_ns - self.generate_ns

    @classmethod
    def from_pb(cls, message: pb.AskTiming) -> AskTiming:
        retrieval, generation = message.retrieval, message.generation
        return cls(
            retrieve_ns=message.retrieve_ns,
            generate_ns=message.generate_ns,
            time_to_first_token_ns=message.time_to_first_token_ns,
            total_ns=message.total_ns,
            retrieval={
                "embed_ns": retrieval.embed_ns,
                "search_ns": retrieval.search_ns,
                "rerank_ns": retrieval.rerank_ns,
                "mmr_ns": retrieval.mmr_ns,
                "total_ns": retrieval.total_ns,
            },
            generation={
                "queue_ns": generation.queue_ns,
                "inference_ns": generation.inference_ns,
                "time_to_first_token_ns": generation.time_to_first_token_ns,
                "total_ns": generation.total_ns,
            },
        )


@dataclass(frozen=True)
class AdapterRef:
    """The adapter that answered: its name, and the registry version and alias it resolved to (when any)."""

    name: str
    version: str = ""
    alias: str = ""

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


@dataclass(frozen=True)
class AskDelta:
    """Answer text decoded since the previous delta (``ask_stream`` yields these as they arrive)."""

    text: str
    token_count: int = 0


@dataclass(frozen=True)
class Answer:
    """An answer with its citations, usage and timings; what ``ask`` returns and ``ask_stream`` ends with.

    ``finish_reason`` is "stop", "length", "stop_sequence", "cancelled", or "" when the model was not called
    (``no_context``: retrieval found no passages).
    """

    answer: str
    citations: list[Citation]
    no_context: bool
    finish_reason: str
    usage: Usage
    timing: AskTiming
    model: str
    adapter: AdapterRef | None
    degraded: bool
    degradations: list[str]

    @property
    def cited(self) -> list[Citation]:
        """The citations the answer refers to as [n]."""
        return [c for c in self.citations if c.cited_in_answer]

    @classmethod
    def from_pb(cls, answer: str, message: pb.AskResponse | pb.AskSummary) -> Answer:
        return cls(
            answer=answer,
            citations=[Citation.from_pb(c) for c in message.citations],
            no_context=message.no_context,
            finish_reason=FINISH_REASONS.get(message.finish_reason, ""),
            usage=Usage(message.usage.prompt_tokens, message.usage.completion_tokens, message.usage.total_tokens),
            timing=AskTiming.from_pb(message.timing),
            model=message.model,
            adapter=(
                AdapterRef(message.adapter.name, message.adapter.version, message.adapter.alias)
                if message.HasField("adapter")
                else None
            ),
            degraded=message.degraded,
            degradations=[d.reason for d in message.degradations],
        )


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
    descriptor = pb.DESCRIPTOR.services_by_name["GatewayService"]

    _stub: pb_grpc.GatewayServiceAsyncStub

    def _make_stub(self) -> pb_grpc.GatewayServiceAsyncStub:
        return pb_grpc.GatewayServiceStub(self.channel)

    async def ingest(
        self,
        documents: Iterable[pb.Document] | AsyncIterable[pb.Document],
        *,
        chunking: pb.ChunkingOptions | None = None,
        force: bool = False,
        timeout: float | None = None,
    ) -> AsyncGenerator[pb.IngestDocumentsResponse, None]:
        """Stream documents in; yields one ``result`` per document as it finishes, then the ``summary``."""

        async def requests() -> AsyncIterator[pb.IngestDocumentsRequest]:
            if isinstance(documents, AsyncIterable):
                async for doc in documents:
                    yield pb.IngestDocumentsRequest(document=doc, chunking=chunking, force=force)
            else:
                for doc in documents:
                    yield pb.IngestDocumentsRequest(document=doc, chunking=chunking, force=force)

        async for response in self._server_stream(self._stub.IngestDocuments, requests(), timeout=timeout):
            yield response

    async def delete_documents(
        self, collection: str, tenant: str, document_ids: Sequence[str], *, timeout: float | None = None
    ) -> pb.DeleteDocumentsResponse:
        return await self._unary(
            self._stub.DeleteDocuments,
            pb.DeleteDocumentsRequest(collection=collection, tenant=tenant, document_ids=list(document_ids)),
            timeout=timeout,
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
        return await self._unary(self._stub.Retrieve, request, timeout=timeout)

    def _ask_fields(
        self,
        question: str,
        *,
        collection: str,
        tenant: str,
        adapter: str,
        retrieval: common_pb2.RetrievalOptions | None,
        sampling: common_pb2.SamplingParams | None,
        template_name: str | None,
        template_text: str | None,
        answer_without_context: bool,
        values: dict[str, Any],
    ) -> dict[str, Any]:
        if template_name is not None and template_text is not None:
            raise TypeError("pass template_name or template_text, not both")
        sampling_names = {
            "temperature",
            "top_p",
            "sampling_top_k",
            "max_new_tokens",
            "stop_sequences",
            "seed",
            "repetition_penalty",
        }
        sampling_values = {k.removeprefix("sampling_"): v for k, v in values.items() if k in sampling_names}
        option_values = {k: v for k, v in values.items() if k not in sampling_names}
        if retrieval is not None and option_values:
            raise TypeError("pass either retrieval or retrieval option keyword arguments, not both")
        if sampling is not None and sampling_values:
            raise TypeError("pass either sampling or sampling keyword arguments, not both")
        fields: dict[str, Any] = {
            "question": question,
            "tenant": tenant,
            "collection": collection,
            "retrieval": retrieval or retrieval_options(**option_values),
            "adapter": adapter,
            "sampling": sampling or sampling_params(**sampling_values),
            "answer_without_context": answer_without_context,
        }
        if template_name is not None:
            fields["template_name"] = template_name
        if template_text is not None:
            fields["template_text"] = template_text
        return fields

    async def ask(
        self,
        question: str,
        *,
        collection: str,
        tenant: str,
        adapter: str = "",
        retrieval: common_pb2.RetrievalOptions | None = None,
        sampling: common_pb2.SamplingParams | None = None,
        template_name: str | None = None,
        template_text: str | None = None,
        answer_without_context: bool = False,
        timeout: float | None = None,
        **values: Any,
    ) -> Answer:
        """Answer ``question`` from the tenant's documents, with citations.

        Retrieval options are :func:`retrieval_options` keywords (``top_k`` = passages given to the model,
        ``mode``, ``filter``, ``rerank`` ...) or a ``retrieval`` message; sampling is ``temperature``, ``top_p``,
        ``sampling_top_k``, ``max_new_tokens``, ``stop_sequences``, ``seed``, ``repetition_penalty`` or a
        ``sampling`` message. ``adapter`` is "name", "name@alias" or "name@version"; empty uses the base model.
        """
        fields = self._ask_fields(
            question,
            collection=collection,
            tenant=tenant,
            adapter=adapter,
            retrieval=retrieval,
            sampling=sampling,
            template_name=template_name,
            template_text=template_text,
            answer_without_context=answer_without_context,
            values=values,
        )
        response = await self._unary(self._stub.Ask, pb.AskRequest(**fields), timeout=timeout)
        return Answer.from_pb(response.answer, response)

    async def ask_stream(
        self,
        question: str,
        *,
        collection: str,
        tenant: str,
        adapter: str = "",
        retrieval: common_pb2.RetrievalOptions | None = None,
        sampling: common_pb2.SamplingParams | None = None,
        template_name: str | None = None,
        template_text: str | None = None,
        answer_without_context: bool = False,
        timeout: float | None = None,
        **values: Any,
    ) -> AsyncGenerator[AskDelta | Answer, None]:
        """Like :meth:`ask`, streamed: yields :class:`AskDelta` items as the answer is decoded, then one
        :class:`Answer` (whose ``answer`` is the deltas joined). To stop early, close the iterator (``aclose()``,
        or iterate inside ``contextlib.aclosing``): that cancels the call, which stops generation."""
        fields = self._ask_fields(
            question,
            collection=collection,
            tenant=tenant,
            adapter=adapter,
            retrieval=retrieval,
            sampling=sampling,
            template_name=template_name,
            template_text=template_text,
            answer_without_context=answer_without_context,
            values=values,
        )
        pieces: list[str] = []
        async for response in self._server_stream(self._stub.AskStream, pb.AskStreamRequest(**fields), timeout=timeout):
            if response.HasField("delta"):
                pieces.append(response.delta.text)
                yield AskDelta(response.delta.text, response.delta.token_count)
            elif response.HasField("summary"):
                yield Answer.from_pb("".join(pieces), response.summary)
