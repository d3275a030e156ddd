"""``python -m lorag_gateway``: run the gateway until SIGTERM."""

from __future__ import annotations

from lorag_core.config import load_settings
from lorag_core.server import run, serve
from lorag_gateway.config import GatewaySettings
from lorag_gateway.server import Gateway


async def _main() -> None:
    gateway = Gateway(load_settings(GatewaySettings))
    await serve(gateway.app, shutdown=gateway.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
