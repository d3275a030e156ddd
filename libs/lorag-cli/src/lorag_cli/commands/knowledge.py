"""`lorag ingest PATH`, `lorag sync PATH`, `lorag delete ID...` and `lorag retrieve QUERY`: the knowledge path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lorag.common.v1 import common_pb2
from lorag.gateway.v1 import gateway_service_pb2
from lorag_cli.folder import iter_folder, iter_folder_paths, removed
from lorag_cli.ingesting import IngestReport, stream_documents
from lorag_cli.output import err, out, print_json, run_rpc, to_dict
from lorag_client import GatewayClient, IndexerClient, NotFound, document

Collection = Annotated[str, typer.Option("--collection", "-c", help="Collection to use (created on first ingest).")]
Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant (one per customer; isolated from the others).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _documents(path: Path, collection: str, tenant: str) -> Iterator[gateway_service_pb2.Document]:
    for file in iter_folder(path):
        yield document(
            tenant=tenant,
            collection=collection,
            id=file.document_id,
            source_uri=file.source_uri,
            data=file.data,
            mime_type=file.mime_type,
        )


def _print_report(report: IngestReport, as_json: bool, deleted: list[str] | None = None) -> None:
    data = report.to_dict() | ({"deleted": deleted} if deleted is not None else {})
    if as_json:
        print_json(data)
    else:
        line = (
            f"{data['documents']} documents: {report.counts['written']} written, {report.counts['unchanged']} "
            f"unchanged, {report.counts['failed']} failed; {report.chunks} chunks in {report.seconds:.1f} s"
        )
        if deleted is not None:
            line += f"; {len(deleted)} deleted"
        out.print(line)
        for failure in report.failures:
            err.print(
                f"[red]failed[/red] {failure['source_uri'] or failure['document_id']}: "
                f"{failure['code']}: {failure['reason']}",
                highlight=False,
            )
    if report.failures:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        path: Annotated[Path, typer.Argument(help="A file or folder (.txt .md .html .pdf; hidden files skipped).")],
        collection: Collection = "docs",
        tenant: Tenant = "default",
        force: Annotated[bool, typer.Option(help="Re-index even unchanged documents.")] = False,
        as_json: Json = False,
    ) -> None:
        """Ingest files through the gateway: parse, chunk, embed, index; unchanged documents write nothing."""
        total = sum(1 for _ in iter_folder_paths(path))

        async def call() -> IngestReport:
            async with GatewayClient() as gateway:
                return await stream_documents(
                    gateway, _documents(path, collection, tenant), total, force=force, show_progress=not as_json
                )

        _print_report(run_rpc(call), as_json)

    @app.command()
    def sync(
        path: Annotated[Path, typer.Argument(help="The folder the collection should mirror.")],
        collection: Collection = "docs",
        tenant: Tenant = "default",
        as_json: Json = False,
    ) -> None:
        """Make a collection mirror a folder: add and update changed files (by content hash), delete removed ones."""
        local = [relative for relative, _, _ in iter_folder_paths(path)]

        async def call() -> tuple[IngestReport, list[str]]:
            async with GatewayClient() as gateway, IndexerClient() as indexer:
                report = await stream_documents(
                    gateway,
                    _documents(path, collection, tenant),
                    len(local),
                    label="syncing",
                    show_progress=not as_json,
                )
                try:
                    indexed = [d.document_id async for d in indexer.iter_documents(collection, tenant)]
                except NotFound:
                    indexed = []
                gone = removed(local, indexed)
                for start in range(0, len(gone), 1000):
                    await gateway.delete_documents(collection, tenant, gone[start : start + 1000])
                return report, gone

        report, gone = run_rpc(call)
        _print_report(report, as_json, deleted=gone)

    @app.command()
    def delete(
        document_ids: Annotated[list[str], typer.Argument(help="Ids of the documents to delete.")],
        collection: Collection = "docs",
        tenant: Tenant = "default",
        as_json: Json = False,
    ) -> None:
        """Delete documents, with all their chunks."""

        async def call() -> gateway_service_pb2.DeleteDocumentsResponse:
            async with GatewayClient() as gateway:
                return await gateway.delete_documents(collection, tenant, document_ids)

        response = run_rpc(call)
        if as_json:
            print_json(to_dict(response))
        else:
            out.print(f"deleted {response.deleted_document_count} documents ({response.deleted_chunk_count} chunks)")

    @app.command()
    def retrieve(
        query: Annotated[str, typer.Argument(help="What to look for.")],
        collection: Collection = "docs",
        tenant: Tenant = "default",
        mode: Annotated[str, typer.Option(help="dense, keyword or hybrid.")] = "hybrid",
        top_k: Annotated[int, typer.Option("--top-k", "-k", help="Passages to return (1-100).")] = 5,
        rerank: Annotated[
            bool | None, typer.Option("--rerank/--no-rerank", help="Rerank (default: the service's).")
        ] = None,
        mmr: Annotated[bool, typer.Option(help="Drop near-duplicate passages (MMR).")] = False,
        as_json: Json = False,
    ) -> None:
        """The passages most relevant to QUERY, with scores, document ids and character spans."""
        if mode not in ("dense", "keyword", "hybrid"):
            raise typer.BadParameter("use dense, keyword or hybrid", param_hint="--mode")

        async def call() -> gateway_service_pb2.RetrieveResponse:
            async with GatewayClient() as gateway:
                return await gateway.retrieve(
                    query, collection=collection, tenant=tenant, mode=mode, top_k=top_k, rerank=rerank, mmr=mmr
                )

        response = run_rpc(call)
        if as_json:
            print_json(to_dict(response))
            return
        table = Table(title=f"{len(response.chunks)} passages{' (reranked)' if response.reranked else ''}")
        for column in ("#", "score", "document", "span", "text"):
            table.add_column(column, overflow="fold")
        for rank, hit in enumerate(response.chunks, 1):
            chunk = hit.chunk
            table.add_row(
                str(rank),
                f"{hit.score:.3f}",
                chunk.document_id,
                f"{chunk.char_start}-{chunk.char_end}",
                chunk.text[:160].replace("\n", " "),
            )
        out.print(table)
        for degradation in response.degradations:
            stage = common_pb2.RetrievalStage.Name(degradation.stage).removeprefix("RETRIEVAL_STAGE_").lower()
            err.print(f"[yellow]degraded[/yellow] {stage}: {degradation.reason}", highlight=False)
