"""``python -m lorag_indexer``: run the indexer service until SIGTERM."""

from __future__ import annotations

from lorag_core.config import ConfigError, load_settings
from lorag_core.errors import Unavailable
from lorag_core.server import run, serve
from lorag_indexer.config import IndexerSettings
from lorag_indexer.server import create_app


async def _main() -> None:
    settings = load_settings(IndexerSettings)
    app, store = create_app(settings)

    async def startup() -> None:
        # NOT_SERVING until Weaviate answers; only a finite LORAG_INDEXER_CONNECT_TIMEOUT_SECONDS gives up.
        try:
            await store.start()
        except Unavailable as exc:
            raise ConfigError(
                f"{exc.message} (check LORAG_WEAVIATE_HOST, LORAG_WEAVIATE_HTTP_PORT and LORAG_WEAVIATE_GRPC_PORT)"
            ) from None

    await serve(app, startup=startup, shutdown=store.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
