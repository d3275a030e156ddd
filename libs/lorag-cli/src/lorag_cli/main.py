"""The `lorag` command line.

main.py only assembles the app. Commands live in their own modules, each exposing `register(app)`: the local
stack in `lorag_cli.stack.cli`, and every module dropped into the `lorag_cli.commands` package (for example
`lorag_cli/commands/embed.py`), which is discovered here so adding a verb never means editing this file.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

from lorag_cli.stack import cli as stack_cli

COMMANDS_PACKAGE = "lorag_cli.commands"

app = typer.Typer(
    name="lorag",
    help="lorag: RAG and LoRA fine-tuning over typed gRPC services.",
    no_args_is_help=True,
    add_completion=False,
)


def _register_commands(app: typer.Typer) -> None:
    """Register the stack commands, then each `lorag_cli.commands.<module>` that defines `register(app)`."""
    stack_cli.register(app)
    try:
        package = importlib.import_module(COMMANDS_PACKAGE)
    except ModuleNotFoundError as exc:
        if exc.name != COMMANDS_PACKAGE:
            raise
        return
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{COMMANDS_PACKAGE}.{info.name}")
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


_register_commands(app)


def main() -> None:
    """Console-script entry point (`lorag`)."""
    app()
