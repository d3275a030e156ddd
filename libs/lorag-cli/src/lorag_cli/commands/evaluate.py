"""`lorag eval retrieval`: retrieval quality on BEIR-format data, through the running stack.

The corpus is ingested through the gateway (a second run finds every document unchanged and writes nothing),
then the split's queries run through the gateway's Retrieve in each mode. Chunk hits collapse to documents at
their best chunk's rank. top_k is at most 100 chunks, so recall@100 counts the distinct documents among the top
100 chunks: a lower bound when documents span several chunks.

``hybrid-rerank`` reranks the head of the hybrid list, as production systems do: the top ``--rerank-depth``
chunks come from a Retrieve with reranking on (that many candidates), the rest of the 100 follow in hybrid order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag_cli.beir import distinct_documents, evaluate, iter_corpus, load_qrels, load_queries
from lorag_cli.ingesting import IngestReport, stream_documents
from lorag_cli.output import err, out, print_json, run_rpc
from lorag_client import GatewayClient, document, retrieval_options
from lorag_client.retrieval import Mode

# Mode → (search mode, rerank).
MODES: dict[str, tuple[Mode, bool]] = {
    "dense": ("dense", False),
    "keyword": ("keyword", False),
    "hybrid": ("hybrid", False),
    "hybrid-rerank": ("hybrid", True),
}

eval_app = typer.Typer(help="Measure lorag's quality on standard data.", no_args_is_help=True)


async def _run_mode(
    gateway: GatewayClient,
    mode: str,
    queries: dict[str, str],
    collection: str,
    tenant: str,
    concurrency: int,
    rerank_depth: int,
    progress: Progress,
) -> dict[str, list[str]]:
    search, rerank = MODES[mode]
    first_stage = retrieval_options(mode=search, top_k=100, rerank=False)
    head = retrieval_options(mode=search, top_k=rerank_depth, candidate_count=rerank_depth, rerank=True)
    task = progress.add_task(f"{mode:>13}", total=len(queries))
    gate = asyncio.Semaphore(concurrency)
    runs: dict[str, list[str]] = {}
    degraded = 0

    async def one(query_id: str, text: str) -> None:
        nonlocal degraded
        async with gate:
            found = await gateway.retrieve(text, collection=collection, tenant=tenant, options=first_stage)
            ranked = [hit.chunk.document_id for hit in found.chunks]
            if rerank:
                reranked = await gateway.retrieve(text, collection=collection, tenant=tenant, options=head)
                degraded += reranked.degraded
                ranked = [hit.chunk.document_id for hit in reranked.chunks] + ranked[rerank_depth:]
        runs[query_id] = distinct_documents(ranked)
        progress.advance(task)

    await asyncio.gather(*(one(q, t) for q, t in queries.items()))
    if degraded:
        err.print(f"[yellow]{mode}: {degraded} of {len(queries)} queries came back degraded (reranker unavailable)")
    return runs


@eval_app.command("retrieval")
def retrieval(
    beir: Annotated[Path, typer.Option("--beir", help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/.")],
    split: Annotated[str, typer.Option("--split", help="The qrels split to evaluate (qrels/<split>.tsv).")] = "test",
    mode: Annotated[str, typer.Option("--mode", help="dense, keyword, hybrid, hybrid-rerank or all.")] = "all",
    collection: Annotated[str | None, typer.Option(help="Collection (default: beir_<folder name>).")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant holding the corpus.")] = "eval",
    max_tokens: Annotated[int, typer.Option(help="Chunk size in tokens for the corpus.")] = 254,
    concurrency: Annotated[int, typer.Option(help="Queries in flight.")] = 8,
    rerank_depth: Annotated[int, typer.Option(help="hybrid-rerank: how many of the top chunks are reranked.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per mode.")] = False,
) -> None:
    """nDCG@10, recall@100 and MRR@10 of each retrieval mode on a BEIR dataset, against the running stack."""
    modes = list(MODES) if mode == "all" else [mode]
    if any(m not in MODES for m in modes):
        raise typer.BadParameter(f"use one of {', '.join(MODES)} or all", param_hint="--mode")
    qrels = load_qrels(beir, split)
    all_queries = load_queries(beir)
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    name = collection or "beir_" + "".join(c if c.isalnum() else "_" for c in beir.resolve().name)
    corpus = list(iter_corpus(beir))

    async def call() -> tuple[IngestReport, dict[str, dict[str, float]]]:
        async with GatewayClient(timeout=300) as gateway:
            documents = (
                document(tenant=tenant, collection=name, id=d.id, title=d.title, text=f"{d.title}\n\n{d.text}")
                for d in corpus
            )
            report = await stream_documents(
                gateway,
                documents,
                len(corpus),
                label="ingesting corpus",
                chunking=pb.ChunkingOptions(max_tokens=max_tokens),
            )
            scores = {}
            with Progress(console=err) as progress:
                for m in modes:
                    runs = await _run_mode(gateway, m, queries, name, tenant, concurrency, rerank_depth, progress)
                    scores[m] = evaluate(runs, {q: qrels[q] for q in queries})
            return report, scores

    report, scores = run_rpc(call)
    err.print(
        f"corpus: {sum(report.counts.values())} documents ({report.counts['written']} written, "
        f"{report.counts['unchanged']} unchanged, {report.counts['failed']} failed); "
        f"{len(queries)} {split} queries"
    )
    if as_json:
        for m in modes:
            print_json({"mode": m, **scores[m], "queries": len(queries)})
        return
    table = Table(title=f"{beir.name} ({split}, {len(queries)} queries)")
    for column in ("mode", "nDCG@10", "recall@100", "MRR@10"):
        table.add_column(column)
    for m in modes:
        s = scores[m]
        table.add_row(m, f"{s['ndcg_at_10']:.4f}", f"{s['recall_at_100']:.4f}", f"{s['mrr_at_10']:.4f}")
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
