"""What every lorag client shares: one chassis channel, a default timeout, typed errors, async context management.

Every method of every client calls through :meth:`ServiceClient._unary` or one of its streaming twins, so a
failed call always raises a :class:`lorag_core.errors.LoragError` (``InvalidArgument``, ``NotFound``,
``Unavailable`` ...: code, reason, metadata, field violations, and ``dependency``, the service called), never a
raw ``grpc.aio.AioRpcError``. Retries come from the contract (see :func:`lorag_core.clients.create_channel`), and
transport security from :class:`lorag_core.clients.ChannelSecurity` (the environment by default).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any, ClassVar, Self, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from lorag_client.endpoints import address
from lorag_core.clients import ChannelSecurity, create_channel
from lorag_core.downstream import error_from_rpc

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class ServiceClient(ABC):
    """Base of the per-service clients; pass ``target`` (``host:port``) or rely on the environment defaults."""

    #: The service's short name ("gateway", "indexer" ...): its default address, and ``dependency`` on errors.
    service: ClassVar[str]
    #: The contract the client calls: its RPCs' declared idempotency decides which are retried.
    descriptor: ClassVar[ServiceDescriptor]

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = 60.0,
        channel: grpc.aio.Channel | None = None,
        security: ChannelSecurity | None = None,
        retries: bool = True,
    ) -> None:
        """``retries=False`` turns off the contract's retries on this client's own channel: for load generators,
        whose figures must count every failure a caller would have seen."""
        self.target = target or address(self.service)
        self.default_timeout = timeout
        self._owns_channel = channel is None
        contracts = [self.descriptor] if retries else []
        self.channel = channel or create_channel(self.target, services=contracts, security=security)
        self._stub: Any = self._make_stub()

    @abstractmethod
    def _make_stub(self) -> Any:
        """The generated stub of this client's service, bound to ``self.channel``."""

    def _timeout(self, timeout: float | None) -> float | None:
        return self.default_timeout if timeout is None else timeout

    async def _unary(
        self,
        call: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
        *,
        timeout: float | None = None,
    ) -> ResponseT:
        """Call a unary RPC of the stub; a failure raises the matching lorag error."""
        try:
            return await call(request, timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, dependency=self.service) from None

    async def _client_stream(
        self,
        call: grpc.aio.StreamUnaryMultiCallable[RequestT, ResponseT],
        requests: AsyncIterator[RequestT] | Iterator[RequestT],
        *,
        timeout: float | None = None,
    ) -> ResponseT:
        """Send ``requests`` to a client-streaming RPC and return its one response."""
        try:
            return await call(requests, timeout=self._timeout(timeout))
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, dependency=self.service) from None

    async def _server_stream(
        self,
        call: grpc.aio.UnaryStreamMultiCallable[RequestT, ResponseT]
        | grpc.aio.StreamStreamMultiCallable[RequestT, ResponseT],
        request: Any,
        *,
        timeout: float | None,
    ) -> AsyncGenerator[ResponseT, None]:
        """Iterate the responses of a response-streaming RPC (``request``: an async iterator for a bidi one).

        ``timeout`` is used as given (``None``: no deadline; long streams choose their own). Leaving the loop
        early, or cancelling the task, cancels the call, which stops the work on the server."""
        stream = call(request, timeout=timeout)
        try:
            async for response in stream:
                yield response
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, dependency=self.service) from None
        finally:
            stream.cancel()

    def _method(self, method: str, *, streaming_response: bool) -> Any:
        descriptor = self.descriptor.methods_by_name.get(method)
        if descriptor is None or descriptor.server_streaming != streaming_response:
            kind = "response-streaming" if streaming_response else "single-response"
            raise ValueError(f"{self.descriptor.full_name} has no {kind} RPC {method!r}")
        return getattr(self._stub, method), descriptor.client_streaming

    async def invoke(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        """Call any single-response RPC by name (``request``: an async or plain iterator for a client stream),
        e.g. ``await client.invoke("Embed", request)``: for generic tools (load generators, scripts) that build
        requests themselves. Typed errors, as every other method."""
        call, client_streaming = self._method(method, streaming_response=False)
        if client_streaming:
            return await self._client_stream(call, request, timeout=timeout)
        return await self._unary(call, request, timeout=timeout)

    async def invoke_stream(
        self, method: str, request: Any, *, timeout: float | None = None
    ) -> AsyncGenerator[Any, None]:
        """Iterate the responses of any response-streaming RPC by name (see :meth:`invoke`); ``timeout`` as given."""
        call, _ = self._method(method, streaming_response=True)
        async for response in self._server_stream(call, request, timeout=timeout):
            yield response

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
