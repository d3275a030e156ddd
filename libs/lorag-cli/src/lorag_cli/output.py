"""How CLI verbs talk to people and scripts: JSON on request, and errors that say what to fix."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console

from lorag_client import LoragError, Unavailable

out = Console()
err = Console(stderr=True)

T = TypeVar("T")


def to_dict(message: Message) -> dict[str, Any]:
    """A response as plain JSON-ready data, with proto field names (what scripts read)."""
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def describe_error(error: LoragError) -> str:
    """One readable paragraph: the code, the message, the reason and each field violation."""
    lines = [f"{error.code.name}: {error.message}"]
    if error.reason and error.reason != "UNKNOWN":
        lines.append(f"  reason: {error.reason}")
    lines.extend(f"  {violation.field}: {violation.description}" for violation in error.violations)
    if isinstance(error, Unavailable):
        lines.append("  is the service running? `lorag up` starts the local stack; `lorag status` shows it.")
    return "\n".join(lines)


def run_rpc(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async client call from a CLI verb; a lorag error becomes a readable message and exit code 1."""
    try:
        return asyncio.run(call())
    except LoragError as error:
        err.print(f"[red]error[/red] {describe_error(error)}", highlight=False)
        raise typer.Exit(1) from None
