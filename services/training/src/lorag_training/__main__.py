"""``python -m lorag_training``: run the training service until SIGTERM."""

from __future__ import annotations

from lorag_core.config import load_settings
from lorag_core.server import run, serve
from lorag_training.config import TrainingSettings
from lorag_training.server import create_app


async def _main() -> None:
    settings = load_settings(TrainingSettings)
    app, runtime = create_app(settings)
    await serve(app, startup=runtime.start, shutdown=runtime.close)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
