"""`lorag generate PROMPT`: generate text with the generation service (the prompt is sent as one user message)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from lorag_cli.output import print_json, run_rpc
from lorag_client import GenerationClient
from lorag_client.sampling import FINISH_REASONS


def result_json(text: str, summary: Any, total_ms: float) -> dict[str, Any]:
    """The --json shape: text, adapter, finish reason, usage, timings in milliseconds, model."""
    timing = summary.timing
    adapter = summary.adapter
    return {
        "text": text,
        "adapter": (
            {"name": adapter.name, "version": adapter.version, "alias": adapter.alias}
            if summary.HasField("adapter")
            else None
        ),
        "finish_reason": FINISH_REASONS.get(summary.finish_reason) or "unspecified",
        "usage": {
            "prompt_tokens": summary.usage.prompt_tokens,
            "completion_tokens": summary.usage.completion_tokens,
            "total_tokens": summary.usage.total_tokens,
        },
        "timings": {
            "queue_ms": round(timing.queue_ns / 1e6, 3),
            "time_to_first_token_ms": round(timing.time_to_first_token_ns / 1e6, 3),
            "inference_ms": round(timing.inference_ns / 1e6, 3),
            "total_ms": round(total_ms, 3),
        },
        "model": summary.model,
    }


def register(app: typer.Typer) -> None:
    @app.command()
    def generate(
        prompt: Annotated[str, typer.Argument(help="What to ask; sent as one user message (chat template applied).")],
        adapter: Annotated[str, typer.Option(help="LoRA adapter: name, name@alias or name@version.")] = "",
        max_new_tokens: Annotated[
            int | None, typer.Option(help="Most tokens to generate (service default 256).")
        ] = None,
        temperature: Annotated[float | None, typer.Option(help="0 = greedy; unset = the model's default.")] = None,
        seed: Annotated[int | None, typer.Option(help="Random seed, for a reproducible sampled answer.")] = None,
        address: Annotated[str | None, typer.Option(help="host:port of the generation service.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    ) -> None:
        """Generate an answer to PROMPT, streamed to the terminal as it is decoded."""

        async def call() -> tuple[str, Any, float]:
            started = time.perf_counter()
            parts: list[str] = []
            summary = None
            async with GenerationClient(address, timeout=None) as client:
                async for message in client.generate_stream(
                    messages=[{"role": "user", "content": prompt}],
                    adapter=adapter,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    seed=seed,
                ):
                    if message.HasField("delta"):
                        parts.append(message.delta.text)
                        if not as_json:
                            sys.stdout.write(message.delta.text)
                            sys.stdout.flush()
                    else:
                        summary = message.summary
            return "".join(parts), summary, (time.perf_counter() - started) * 1000

        text, summary, total_ms = run_rpc(call)
        if as_json:
            print_json(result_json(text, summary, total_ms))
        else:
            sys.stdout.write("\n")
