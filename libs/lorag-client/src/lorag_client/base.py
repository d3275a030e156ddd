"""What every lorag client shares: a chassis channel, a default timeout, async context management."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import grpc

from lorag_client.endpoints import address
from lorag_core.clients import create_channel


class ServiceClient(ABC):
    """Base of the per-service clients; pass ``target`` (``host:port``) or rely on the environment defaults."""

    service: ClassVar[str]
    service_name: ClassVar[str]
    # Whether every RPC of the service is safe to retry on UNAVAILABLE.
    idempotent: ClassVar[bool] = True

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = 60.0,
        channel: grpc.aio.Channel | None = None,
        tls: bool = False,
    ) -> None:
        self.target = target or address(self.service)
        self.default_timeout = timeout
        self._owns_channel = channel is None
        self.channel = channel or create_channel(
            self.target, retry_services=[self.service_name] if self.idempotent else (), tls=tls
        )
        self.stub: Any = self._make_stub()

    @abstractmethod
    def _make_stub(self) -> Any:
        """The generated stub of this client's service, bound to ``self.channel``."""

    def _timeout(self, timeout: float | None) -> float | None:
        return self.default_timeout if timeout is None else timeout

    async def close(self) -> None:
        if self._owns_channel:
            await self.channel.close()

    async def __aenter__(self):  # type: ignore[no-untyped-def]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
