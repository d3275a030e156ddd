"""``python -m lorag_embedding``: run the embedding service until SIGTERM."""

from __future__ import annotations

from lorag_core.config import load_settings
from lorag_core.server import run, serve
from lorag_embedding.config import EmbeddingSettings
from lorag_embedding.server import create_app


async def _main() -> None:
    settings = load_settings(EmbeddingSettings)
    app, embedder = create_app(settings)
    await serve(app, startup=embedder.start, shutdown=embedder.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
