"""``python -m lorag_generation``: run the generation service until SIGTERM."""

from __future__ import annotations

from lorag_core.config import load_settings
from lorag_core.server import run, serve
from lorag_generation.config import GenerationSettings
from lorag_generation.server import create_app


async def _main() -> None:
    settings = load_settings(GenerationSettings)
    app, generation = create_app(settings)
    await serve(app, startup=generation.start, shutdown=generation.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
