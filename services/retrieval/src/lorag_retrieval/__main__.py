"""``python -m lorag_retrieval``: run the retrieval service until SIGTERM."""

from __future__ import annotations

from lorag_core.config import load_settings
from lorag_core.server import run, serve
from lorag_retrieval.config import RetrievalSettings
from lorag_retrieval.server import create_app


async def _main() -> None:
    settings = load_settings(RetrievalSettings)
    app, retriever = create_app(settings)
    await serve(app, startup=retriever.start, shutdown=retriever.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
