"""Streams documents into the gateway with a live progress bar, tallying each document's result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag_cli.output import err
from lorag_client import GatewayClient

OUTCOMES = {
    pb.INGEST_OUTCOME_WRITTEN: "written",
    pb.INGEST_OUTCOME_UNCHANGED: "unchanged",
    pb.INGEST_OUTCOME_FAILED: "failed",
}


@dataclass
class IngestReport:
    """What a whole ingest did, for the table or ``--json``."""

    counts: dict[str, int] = field(default_factory=lambda: {"written": 0, "unchanged": 0, "failed": 0})
    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            **self.counts,
            "documents": sum(self.counts.values()),
            "chunks": self.chunks,
            "embedded_tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "failures": self.failures,
        }


async def stream_documents(
    gateway: GatewayClient,
    documents: Iterable[pb.Document],
    total: int,
    *,
    label: str = "ingesting",
    force: bool = False,
    chunking: pb.ChunkingOptions | None = None,
    show_progress: bool = True,
) -> IngestReport:
    """Send ``documents`` through one IngestDocuments stream; the bar advances as results come back."""
    report = IngestReport()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tally]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, disable=not show_progress, transient=False) as progress:
        task = progress.add_task(label, total=total, tally="")

        async def source() -> AsyncIterator[pb.Document]:
            for doc in documents:
                yield doc

        async for event in gateway.ingest(source(), force=force, chunking=chunking):
            if event.HasField("summary"):
                report.chunks = event.summary.chunk_count
                report.tokens = event.summary.usage.prompt_tokens
                report.seconds = event.summary.elapsed_ns / 1e9
                continue
            result = event.result
            outcome = OUTCOMES.get(result.outcome, "failed")
            report.counts[outcome] += 1
            if outcome == "failed":
                report.failures.append(
                    {
                        "document_id": result.document_id,
                        "source_uri": result.source_uri,
                        "code": result.error_code,
                        "reason": result.reason,
                    }
                )
            tally = " ".join(f"{name} {n}" for name, n in report.counts.items() if n)
            progress.update(task, advance=1, tally=tally)
    return report
