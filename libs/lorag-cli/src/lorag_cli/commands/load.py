"""`lorag load SERVICE`: load one lorag service's RPC at a fixed rate or concurrency and report its latency.

    lorag load embedding --concurrency 4 --duration 30
    lorag load gateway --rpc AskStream --rate 2 --duration 60 --json --plot ask.html

Calls go through the service's SDK client with its retries off (a retry would hide the error a caller saw).
The figures go to stdout (a table, or JSON with --json); a self-contained HTML plot of latency and throughput
over time is written unless --no-plot. Exit code 0 when the run completed, errors or not (--fail-on-errors: 1
when any call failed); 1 when the service cannot be reached or prepared; 2 for bad options.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lorag_cli.output import describe_error, err, out, print_json
from lorag_client import CLIENTS, LoragError, endpoints

SERVICES = ("gateway", "embedding", "indexer", "retrieval", "generation", "training")


def default_plot_path(service: str, rpc: str) -> Path:
    return Path(f"lorag-load-{service}-{rpc}-{time.strftime('%Y%m%dT%H%M%S')}.html")


async def _run(
    service: str,
    rpc: str | None,
    address: str,
    options: Any,
    *,
    rate: float | None,
    concurrency: int | None,
    duration: float,
    warmup: float,
    max_in_flight: int,
    quiet: bool,
) -> tuple[Any, Any]:
    from lorag_cli.load import payloads, runner

    async with CLIENTS[service](address, timeout=options.timeout, retries=False) as client:
        try:
            await asyncio.wait_for(client.channel.channel_ready(), timeout=10)
        except TimeoutError:
            err.print(
                f"[red]error[/red] cannot reach the {service} service at {address}; is it running? "
                "(`lorag status`, or --address / LORAG_" + service.upper() + "_ADDRESS)",
                highlight=False,
            )
            raise typer.Exit(1) from None
        workload = await payloads.build_workload(service, rpc, client, options, endpoints.address)
        if not quiet:
            for note in workload.notes:
                err.print(f"[dim]{note}[/dim]", highlight=False)
            load = f"{rate:g} requests/s" if rate is not None else f"concurrency {concurrency}"
            err.print(
                f"loading {service} {workload.spec.name} at {address}: {load} for {duration:g} s"
                + (f" after {warmup:g} s of warmup" if warmup else ""),
                highlight=False,
            )
        if rate is not None:
            result = await runner.run_rate(workload.call, rate, duration, warmup=warmup, max_in_flight=max_in_flight)
        else:
            result = await runner.run_concurrency(workload.call, concurrency or 1, duration, warmup=warmup)
    return workload, result


def _print_table(figures: dict[str, Any]) -> None:
    table = Table(title=f"lorag load {figures['service']} {figures['rpc']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        if key in ("service", "rpc", "notes"):
            continue
        if key == "errors":
            value = ", ".join(f"{code} {count}" for code, count in value.items()) or "none"
        table.add_row(key, "—" if value is None else str(value))
    out.print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def load(
        service: Annotated[str, typer.Argument(help=f"The service to load: {', '.join(SERVICES)}.")],
        rpc: Annotated[
            str | None,
            typer.Option(
                help="The RPC (default: the service's main one; writes only when "
                "named: UpsertChunks, IngestDocuments, UploadDataset)."
            ),
        ] = None,
        rate: Annotated[
            float | None,
            typer.Option(help="Fixed rate, requests/s (open model; latency from each request's due time)."),
        ] = None,
        concurrency: Annotated[
            int | None, typer.Option(help="Fixed concurrency: this many callers, each sending again when answered.")
        ] = None,
        duration: Annotated[float, typer.Option(help="Seconds measured (after the warmup).")] = 10.0,
        warmup: Annotated[float, typer.Option(help="Seconds of load before measuring, not recorded.")] = 0.0,
        max_in_flight: Annotated[
            int,
            typer.Option(
                help="With --rate: the most calls outstanding; later requests wait, their wait counted in latency."
            ),
        ] = 256,
        address: Annotated[
            str | None,
            typer.Option(help="host:port of the service (default: LORAG_<SVC>_ADDRESS, else the local stack's)."),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
        plot: Annotated[
            Path | None,
            typer.Option(
                help="Where to write the plot (.html; .png when matplotlib is "
                "installed). Default: "
                "./lorag-load-<service>-<rpc>-<time>.html"
            ),
        ] = None,
        no_plot: Annotated[bool, typer.Option("--no-plot", help="Write no plot.")] = False,
        collection: Annotated[str, typer.Option("--collection", "-c", help="Collection searched or written.")] = "docs",
        tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant searched or written.")] = "default",
        mode: Annotated[str, typer.Option(help="Search mode: dense, keyword or hybrid.")] = "hybrid",
        top_k: Annotated[int, typer.Option("--top-k", "-k", help="Passages per search or retrieval.")] = 5,
        rerank: Annotated[
            bool | None, typer.Option("--rerank/--no-rerank", help="Retrieve/Ask: rerank (default: the service's).")
        ] = None,
        batch: Annotated[int, typer.Option(help="Texts per Embed request (Rerank: 8 x this many passages).")] = 1,
        max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per Generate/Ask request.")] = 16,
        adapter: Annotated[str, typer.Option(help="Adapter for Generate/Ask (default: the base model).")] = "",
        corpus: Annotated[
            Path | None,
            typer.Option(help="Folder of .md/.txt files the texts come from (default: the repository's docs/)."),
        ] = None,
        timeout: Annotated[float, typer.Option(help="Deadline of each call, in seconds.")] = 30.0,
        seed: Annotated[int, typer.Option(help="Seed of the generated payloads.")] = 0,
        fail_on_errors: Annotated[bool, typer.Option("--fail-on-errors", help="Exit 1 when any call failed.")] = False,
    ) -> None:
        """Load SERVICE at a fixed --rate or --concurrency; report throughput, latency percentiles and errors."""
        from lorag_cli.load import payloads, report
        from lorag_cli.load import plot as plotting

        if service not in SERVICES:
            raise typer.BadParameter(f"choose one of {', '.join(SERVICES)}", param_hint="SERVICE")
        try:
            spec = payloads.rpc_spec(service, rpc)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--rpc") from None
        if (rate is None) == (concurrency is None):
            raise typer.BadParameter("give exactly one of --rate or --concurrency", param_hint="--rate/--concurrency")
        if rate is not None and rate <= 0:
            raise typer.BadParameter("must be above 0", param_hint="--rate")
        if concurrency is not None and concurrency < 1:
            raise typer.BadParameter("must be at least 1", param_hint="--concurrency")
        if duration <= 0 or warmup < 0 or max_in_flight < 1 or timeout <= 0:
            raise typer.BadParameter(
                "--duration and --timeout must be above 0, --warmup at least 0, --max-in-flight at least 1"
            )
        if mode not in ("dense", "keyword", "hybrid"):
            raise typer.BadParameter("use dense, keyword or hybrid", param_hint="--mode")
        if batch < 1 or top_k < 1 or max_new_tokens < 1:
            raise typer.BadParameter("--batch, --top-k and --max-new-tokens must be at least 1")
        plot_path = None if no_plot else (plot or default_plot_path(service, spec.name))
        if plot_path is not None and plot_path.suffix == ".png" and not plotting.matplotlib_available():
            raise typer.BadParameter("a .png plot needs matplotlib; write .html instead", param_hint="--plot")

        target = address or endpoints.address(service)
        options = payloads.LoadOptions(
            collection=collection,
            tenant=tenant,
            mode=mode,
            top_k=top_k,
            rerank=rerank,
            batch=batch,
            max_new_tokens=max_new_tokens,
            adapter=adapter,
            corpus=corpus,
            seed=seed,
            timeout=timeout,
        )
        try:
            workload, result = asyncio.run(
                _run(
                    service,
                    spec.name,
                    target,
                    options,
                    rate=rate,
                    concurrency=concurrency,
                    duration=duration,
                    warmup=warmup,
                    max_in_flight=max_in_flight,
                    quiet=as_json,
                )
            )
        except LoragError as error:
            err.print(f"[red]error[/red] preparing the load failed: {describe_error(error)}", highlight=False)
            raise typer.Exit(1) from None
        except RuntimeError as error:
            err.print(f"[red]error[/red] preparing the load failed: {error}", highlight=False)
            raise typer.Exit(1) from None

        figures: dict[str, Any] = {"service": service, "rpc": spec.name, "address": target}
        if rate is not None:
            figures |= {"mode": "rate", "target_rate": rate, "max_in_flight": max_in_flight}
        else:
            figures |= {"mode": "concurrency", "concurrency": concurrency}
        figures |= {"warmup_s": warmup} | report.summarize(result) | {"notes": workload.notes}
        figures["plot"] = str(plot_path) if plot_path is not None else None
        if plot_path is not None:
            rows = report.per_second(result.samples, result.elapsed)
            writer = plotting.write_png if plot_path.suffix == ".png" else plotting.write_html
            writer(plot_path, figures, rows)
        if as_json:
            print_json(figures)
        else:
            _print_table(figures)
        if fail_on_errors and figures["errors"]:
            raise typer.Exit(1)
