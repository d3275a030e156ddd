"""Client for the generation service."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from lorag.common.v1 import common_pb2
from lorag.generation.v1 import generation_service_pb2 as pb
from lorag.generation.v1 import generation_service_pb2_grpc as pb_grpc
from lorag_client.base import ServiceClient
from lorag_client.sampling import sampling_params

_ROLES = {"system": common_pb2.ROLE_SYSTEM, "user": common_pb2.ROLE_USER, "assistant": common_pb2.ROLE_ASSISTANT}

Message = Mapping[str, str] | tuple[str, str]
GenerateRequestT = TypeVar("GenerateRequestT", pb.GenerateRequest, pb.GenerateStreamRequest)


def chat(messages: Iterable[Message]) -> common_pb2.Chat:
    """A Chat from ``{"role": ..., "content": ...}`` dicts or ``(role, content)`` pairs."""
    turns = []
    for message in messages:
        role, content = (message["role"], message["content"]) if isinstance(message, Mapping) else message
        if role not in _ROLES:
            raise ValueError(f"unknown role {role!r}; use system, user or assistant")
        turns.append(common_pb2.ChatMessage(role=_ROLES[role], content=content))
    return common_pb2.Chat(messages=turns)


class GenerationClient(ServiceClient):
    """Generate text and manage LoRA adapters through the generation service.

    async with GenerationClient() as generation:      # 127.0.0.1:50055 unless LORAG_GENERATION_ADDRESS is set
        reply = await generation.generate(messages=[{"role": "user", "content": "Hi"}], temperature=0)
        async for delta in generation.generate_stream(prompt="Once upon a time", max_new_tokens=32):
            ...
    """

    service = "generation"
    descriptor = pb.DESCRIPTOR.services_by_name["GenerationService"]

    _stub: pb_grpc.GenerationServiceAsyncStub

    def _make_stub(self) -> pb_grpc.GenerationServiceAsyncStub:
        return pb_grpc.GenerationServiceStub(self.channel)

    @staticmethod
    def _request(
        cls: type[GenerateRequestT],
        prompt: str | None,
        messages: Iterable[Message] | common_pb2.Chat | None,
        adapter: str,
        sampling: common_pb2.SamplingParams | None,
        values: dict[str, Any],
    ) -> GenerateRequestT:
        if (prompt is None) == (messages is None):
            raise ValueError("pass exactly one of prompt and messages")
        given = {k: v for k, v in values.items() if v not in (None, ())}
        if sampling is not None and given:
            raise TypeError("pass either sampling or sampling keyword arguments, not both")
        request = cls(adapter=adapter, sampling=sampling or sampling_params(**values))
        if prompt is not None:
            request.prompt = prompt
        else:
            request.chat.CopyFrom(messages if isinstance(messages, common_pb2.Chat) else chat(messages or ()))
        return request

    async def generate(
        self,
        prompt: str | None = None,
        *,
        messages: Iterable[Message] | common_pb2.Chat | None = None,
        adapter: str = "",
        sampling: common_pb2.SamplingParams | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        repetition_penalty: float | None = None,
        timeout: float | None = None,
    ) -> pb.GenerateResponse:
        """A whole completion of ``prompt`` (raw) or ``messages`` (chat template applied). Sampling is given as
        keywords or as one ``sampling`` message. Never retried: a generation is not repeated silently."""
        values = dict(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            stop_sequences=stop,
            seed=seed,
            repetition_penalty=repetition_penalty,
        )
        request = self._request(pb.GenerateRequest, prompt, messages, adapter, sampling, values)
        response: pb.GenerateResponse = await self._unary(self._stub.Generate, request, timeout=timeout)
        return response

    async def generate_stream(
        self,
        prompt: str | None = None,
        *,
        messages: Iterable[Message] | common_pb2.Chat | None = None,
        adapter: str = "",
        sampling: common_pb2.SamplingParams | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        repetition_penalty: float | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[pb.GenerateStreamResponse, None]:
        """Stream messages: ``delta`` ones as text is decoded, then one ``summary``. Breaking out of the loop
        (or cancelling the task) cancels the call, which stops generation on the server."""
        values = dict(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            stop_sequences=stop,
            seed=seed,
            repetition_penalty=repetition_penalty,
        )
        request = self._request(pb.GenerateStreamRequest, prompt, messages, adapter, sampling, values)
        async for message in self._server_stream(self._stub.GenerateStream, request, timeout=self._timeout(timeout)):
            yield message

    async def model_info(self, *, timeout: float | None = None) -> pb.GetModelInfoResponse:
        """The base model, backend and limits."""
        return await self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout=timeout)

    async def list_adapters(
        self, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> pb.ListAdaptersResponse:
        """One page of adapters, ordered by name."""
        return await self._unary(
            self._stub.ListAdapters, pb.ListAdaptersRequest(page_size=page_size, page_token=page_token), timeout=timeout
        )

    async def all_adapters(self, *, timeout: float | None = None) -> list[pb.Adapter]:
        """Every adapter, following pages."""
        found: list[pb.Adapter] = []
        token = ""
        while True:
            page = await self.list_adapters(page_token=token, timeout=timeout)
            found.extend(page.adapters)
            token = page.next_page_token
            if not token:
                return found

    async def load_adapter(
        self,
        name: str = "",
        *,
        source_uri: str | None = None,
        registry_reference: str | None = None,
        follow_alias: bool = False,
        pin: bool = False,
        replace: bool = False,
        timeout: float | None = None,
    ) -> pb.LoadAdapterResponse:
        """Load an adapter from a folder / artifact URI or a registry reference ("name", "name@alias", "name@3")."""
        if (source_uri is None) == (registry_reference is None):
            raise ValueError("pass exactly one of source_uri and registry_reference")
        request = pb.LoadAdapterRequest(name=name, follow_alias=follow_alias, pin=pin, replace=replace)
        if source_uri is not None:
            request.source_uri = str(source_uri)
        elif registry_reference is not None:
            request.registry_reference = registry_reference
        return await self._unary(self._stub.LoadAdapter, request, timeout=timeout)

    async def unload_adapter(
        self, name: str, *, allow_missing: bool = False, timeout: float | None = None
    ) -> pb.UnloadAdapterResponse:
        """Remove an adapter; requests already running with it finish first."""
        return await self._unary(
            self._stub.UnloadAdapter, pb.UnloadAdapterRequest(name=name, allow_missing=allow_missing), timeout=timeout
        )
