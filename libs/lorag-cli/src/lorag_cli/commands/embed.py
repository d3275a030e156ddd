"""`lorag embed TEXT...`: embed texts through the embedding service."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from lorag.embedding.v1 import embedding_service_pb2
from lorag_cli.output import out, print_json, run_rpc, to_dict
from lorag_client import EmbeddingClient


def register(app: typer.Typer) -> None:
    @app.command()
    def embed(
        texts: Annotated[list[str], typer.Argument(help="Texts to embed.")],
        query: Annotated[
            bool, typer.Option("--query", help="Embed as search queries (the model's query prompt).")
        ] = False,
        no_truncate: Annotated[bool, typer.Option("--no-truncate", help="Refuse texts over the token limit.")] = False,
        address: Annotated[str | None, typer.Option(help="host:port of the embedding service.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the full response as JSON.")] = False,
    ) -> None:
        """Embed TEXTS and show each vector's size, norm and first components, with timings."""

        async def call() -> embedding_service_pb2.EmbedResponse:
            async with EmbeddingClient(address) as client:  # embed_all: any number of texts, in service-sized calls
                return await client.embed_all(
                    texts, input_type="query" if query else "document", truncate=not no_truncate
                )

        response = run_rpc(call)
        if as_json:
            print_json(to_dict(response))
            return
        table = Table(title=f"embeddings from {response.model}")
        for column in ("text", "tokens", "dims", "norm", "first components"):
            table.add_column(column, overflow="fold")
        for text, embedding in zip(texts, response.embeddings, strict=True):
            values = list(embedding.values)
            norm = sum(v * v for v in values) ** 0.5
            head = ", ".join(f"{v:+.4f}" for v in values[:4]) + ", …"
            tokens = f"{embedding.token_count}{' (truncated)' if embedding.truncated else ''}"
            table.add_row(text[:60], tokens, str(len(values)), f"{norm:.4f}", head)
        out.print(table)
        timing = response.timing
        out.print(
            f"server time {timing.total_ns / 1e6:.1f} ms (queue {timing.queue_ns / 1e6:.1f} ms, "
            f"inference {timing.inference_ns / 1e6:.1f} ms); {response.usage.prompt_tokens} tokens"
        )
