"""`lorag up` / `down` / `status`: thin typer commands over LocalStack, with rich output."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lorag_cli.stack.errors import StackError, StartupError
from lorag_cli.stack.manager import DEFAULT_GRACE, DEFAULT_TIMEOUT, ComponentStatus, Health, LocalStack

_out = Console()
_err = Console(stderr=True)
_STYLE = {Health.SERVING: "green", Health.NOT_SERVING: "yellow", Health.DOWN: "red"}


def _table(rows: list[ComponentStatus]) -> Table:
    table = Table(title="lorag local stack")
    for column in ("component", "health", "pid"):
        table.add_column(column, no_wrap=True)
    table.add_column("address", overflow="fold")
    table.add_column("log", overflow="fold")
    for row in rows:
        table.add_row(
            row.name,
            Text(row.health.value, style=_STYLE[row.health]),
            str(row.pid) if row.pid else "-",
            row.address,
            str(row.log),
        )
    return table


def _fail(exc: StackError) -> typer.Exit:
    """Print a stack error (with a failing component's log tail) and return the exit to raise."""
    if isinstance(exc, StartupError):
        _err.print(Text(f"error: {exc.component}: {exc.reason}", style="bold red"))
        if exc.log_tail:
            _err.print(Text(f"--- last lines of {exc.component}'s log ---", style="dim"))
            _err.print(Text(exc.log_tail), soft_wrap=True)
        _err.print("Components that started keep running; `lorag down` stops them.")
    else:
        _err.print(Text(f"error: {exc}", style="bold red"))
    return typer.Exit(code=1)


def up(
    timeout: Annotated[
        float, typer.Option(help="Seconds each component may take to become healthy (model loads included).")
    ] = DEFAULT_TIMEOUT,
) -> None:
    """Start the local stack (Weaviate and every installed service) and wait until it is healthy."""
    try:
        stack = LocalStack()
        rows = stack.up(timeout=timeout, on_event=lambda msg: _err.print(Text(msg, style="dim")))
    except StackError as exc:
        raise _fail(exc) from None
    _out.print(_table(rows))
    _out.print(f"state: {stack.state}")


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Show each component's pid, address and health (SERVING / NOT_SERVING / DOWN)."""
    try:
        rows = LocalStack().status()
    except StackError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        _out.print(_table(rows))


def down(
    grace: Annotated[float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.")] = DEFAULT_GRACE,
) -> None:
    """Stop the local stack: services first, Weaviate last. Data stays for the next `lorag up`."""
    try:
        stopped = LocalStack().down(grace=grace, on_event=lambda msg: _err.print(Text(msg, style="dim")))
    except StackError as exc:
        raise _fail(exc) from None
    _out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def register(app: typer.Typer) -> None:
    """Add the local-stack commands to the `lorag` app."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
