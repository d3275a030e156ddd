"""How CLI verbs talk to people and scripts: JSON on request, and errors that say what to fix."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rich.console import Console

out = Console()
err = Console(stderr=True)

T = TypeVar("T")


def to_dict(message: Message) -> dict[str, Any]:
    """A response as plain JSON-ready data, with proto field names (what scripts read)."""
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def describe_rpc_error(error: grpc.aio.AioRpcError | grpc.RpcError) -> str:
    """One readable paragraph: the code, the message, the reason and each field violation."""
    code = error.code()  # type: ignore[union-attr]
    lines = [f"{code.name}: {error.details()}"]  # type: ignore[union-attr]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            lines.append(f"  reason: {info.reason}")
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            lines.extend(f"  {v.field}: {v.description}" for v in bad.field_violations)
    if code == grpc.StatusCode.UNAVAILABLE:
        lines.append("  is the service running? `lorag up` starts the local stack; `lorag status` shows it.")
    return "\n".join(lines)


def run_rpc(call: Callable[[], Awaitable[T]]) -> T:
    """Run an async client call from a CLI verb; a gRPC error becomes a readable message and exit code 1."""
    try:
        return asyncio.run(call())  # type: ignore[arg-type]
    except grpc.aio.AioRpcError as error:
        err.print(f"[red]error[/red] {describe_rpc_error(error)}", highlight=False)
        raise typer.Exit(1) from None
