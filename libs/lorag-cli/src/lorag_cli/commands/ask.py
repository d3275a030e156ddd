"""`lorag ask QUESTION`: answer a question from a collection's documents, streamed, with citations and timings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lorag_cli.output import err, out, print_json, run_rpc
from lorag_client import GatewayClient
from lorag_client.gateway import Answer, AskDelta


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


def answer_json(answer: Answer) -> dict[str, Any]:
    """What `lorag ask --json` prints: the answer, its citations (without their text), usage and timings in ms."""
    timing = answer.timing
    return {
        "answer": answer.answer,
        "citations": [
            {
                "passage_number": c.passage_number,
                "document_id": c.document_id,
                "chunk_id": c.chunk_id,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "score": c.score,
                "title": c.title,
                "source_uri": c.source_uri,
                "cited_in_answer": c.cited_in_answer,
            }
            for c in answer.citations
        ],
        "no_context": answer.no_context,
        "finish_reason": answer.finish_reason,
        "usage": {
            "prompt_tokens": answer.usage.prompt_tokens,
            "completion_tokens": answer.usage.completion_tokens,
            "total_tokens": answer.usage.total_tokens,
        },
        "timings": {
            "retrieve_ms": _ms(timing.retrieve_ns),
            "generate_ms": _ms(timing.generate_ns),
            "time_to_first_token_ms": _ms(timing.time_to_first_token_ns),
            "total_ms": _ms(timing.total_ns),
            "gateway_overhead_ms": _ms(timing.gateway_overhead_ns),
            "retrieval": {k.removesuffix("_ns") + "_ms": _ms(v) for k, v in timing.retrieval.items()},
            "generation": {k.removesuffix("_ns") + "_ms": _ms(v) for k, v in timing.generation.items()},
        },
        "model": answer.model,
        "adapter": (
            {"name": answer.adapter.name, "version": answer.adapter.version, "alias": answer.adapter.alias}
            if answer.adapter
            else None
        ),
        "degraded": answer.degraded,
        "degradations": answer.degradations,
    }


def _print_details(answer: Answer, collection: str, tenant: str) -> None:
    if answer.no_context:
        out.print(f"no passages found in {collection}/{tenant}; the model was not asked", highlight=False)
        return
    table = Table(title=f"{len(answer.citations)} passages given to the model (* cited in the answer)")
    for column in ("", "\\[n]", "document", "chars", "score", "title"):
        table.add_column(column, overflow="fold")
    for c in answer.citations:
        table.add_row(
            "*" if c.cited_in_answer else "",
            f"[{c.passage_number}]",
            c.document_id,
            f"{c.char_start}-{c.char_end}",
            f"{c.score:.3f}",
            c.title,
        )
    out.print(table)
    timing = answer.timing
    adapter = f" + {answer.adapter}" if answer.adapter else ""
    out.print(
        f"{answer.model}{adapter}: {answer.usage.prompt_tokens} prompt + {answer.usage.completion_tokens} answer "
        f"tokens ({answer.finish_reason}); retrieve {_ms(timing.retrieve_ns):.1f} ms, first token "
        f"{_ms(timing.time_to_first_token_ns):.1f} ms, generate {_ms(timing.generate_ns):.1f} ms, total "
        f"{_ms(timing.total_ns):.1f} ms",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def ask(
        question: Annotated[str, typer.Argument(help="The question.")],
        collection: Annotated[str, typer.Option("--collection", "-c", help="Collection to search.")] = "docs",
        tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant whose documents answer it.")] = "default",
        adapter: Annotated[str, typer.Option(help="LoRA adapter: name, name@alias or name@version.")] = "",
        top_k: Annotated[int | None, typer.Option("--top-k", "-k", help="Passages given to the model (1-100).")] = None,
        template: Annotated[str | None, typer.Option(help="Prompt template: default or concise.")] = None,
        template_file: Annotated[
            Path | None, typer.Option(help="A prompt template file with {question} and {context}.")
        ] = None,
        max_new_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
        temperature: Annotated[float | None, typer.Option(help="0 for greedy decoding; up to 2.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (not streamed).")] = False,
    ) -> None:
        """Answer QUESTION from the collection's passages, citing them as \\[n]; the answer streams as it is made."""
        if template is not None and template_file is not None:
            raise typer.BadParameter("give --template or --template-file, not both", param_hint="--template")
        options: dict[str, Any] = {
            "collection": collection,
            "tenant": tenant,
            "adapter": adapter,
            "template_name": template,
            "template_text": template_file.read_text(encoding="utf-8") if template_file else None,
            "top_k": top_k,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
        }

        if as_json:

            async def collected() -> Answer:
                async with GatewayClient(timeout=None) as gateway:
                    return await gateway.ask(question, **options)

            print_json(answer_json(run_rpc(collected)))
            return

        async def streamed() -> Answer:
            answer = None
            async with GatewayClient(timeout=None) as gateway:
                async for item in gateway.ask_stream(question, **options):
                    if isinstance(item, AskDelta):
                        sys.stdout.write(item.text)
                        sys.stdout.flush()
                    else:
                        answer = item
            assert answer is not None, "an answer stream always ends with its summary"
            if answer.answer:
                sys.stdout.write("\n")
            return answer

        answer = run_rpc(streamed)
        _print_details(answer, collection, tenant)
        for reason in answer.degradations:
            err.print(f"[yellow]degraded[/yellow] {reason}", highlight=False)
