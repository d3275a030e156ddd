"""`lorag datasets ...`, `lorag train ...`, `lorag jobs ...` and `lorag adapters ...`: fine-tuning.

JSON output uses the proto field names; job states are shown without their "STATE_" prefix ("SUCCEEDED").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from lorag.training.v1 import training_service_pb2 as pb
from lorag_cli.output import err, out, print_json, run_rpc, to_dict
from lorag_client import TrainingClient, Unavailable
from lorag_client.training import TERMINAL_STATES, guess_format, state_name

Address = Annotated[str | None, typer.Option(help="host:port of the training service (else LORAG_TRAINING_ADDRESS).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
MAX_ISSUES_SHOWN = 100
DatasetFormat = Literal["chat", "completion"]
Method = Literal["lora", "qlora", "dora"]


def _strip_states(data: Any) -> Any:
    """Replace "STATE_X" values of state fields with "X", recursively."""
    if isinstance(data, dict):
        return {
            k: (
                v.removeprefix("STATE_")
                if k in ("state", "previous_state") and isinstance(v, str)
                else _strip_states(v)
            )
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_strip_states(v) for v in data]
    return data


def job_json(job: pb.TrainingJob) -> dict[str, Any]:
    return _strip_states(to_dict(job))


def _format_name(value: int) -> str:
    return pb.DatasetFormat.Name(pb.DatasetFormat.ValueType(value)).removeprefix("DATASET_FORMAT_").lower()


def _print_dataset(dataset: pb.Dataset) -> None:
    stats = dataset.token_statistics
    report = dataset.validation_report
    out.print(f"[bold]{dataset.name}[/bold] {dataset.version or '(not stored)'}")
    out.print(
        f"  {_format_name(dataset.format)}, {dataset.row_count} rows, {dataset.size_bytes} bytes; tokens "
        f"({stats.tokenizer}): total {stats.total_tokens}, min {stats.min_tokens}, mean {stats.mean_tokens:.1f},"
        f" p95 {stats.p95_tokens}, max {stats.max_tokens}; {stats.truncated_rows} rows over {stats.max_length}"
    )
    out.print(f"  {report.error_count} errors, {report.warning_count} warnings")
    for issue in list(report.issues)[:MAX_ISSUES_SHOWN]:
        colour = "red" if issue.severity == pb.SEVERITY_ERROR else "yellow"
        where = f"line {issue.line}" + (f": {issue.field}" if issue.field else "")
        err.print(f"  [{colour}]{where}[/{colour}]: {issue.message} ({issue.code})", highlight=False)
    hidden = report.error_count + report.warning_count - min(len(report.issues), MAX_ISSUES_SHOWN)
    if hidden > 0:
        err.print(f"  ... and {hidden} more issues", highlight=False)


def _job_row(job: pb.TrainingJob) -> list[str]:
    progress = f"{job.progress.step}/{job.progress.total_steps}" if job.progress.total_steps else ""
    adapter = f"{job.result_adapter.name}@{job.result_adapter.version}" if job.result_adapter.version else ""
    return [
        job.id,
        state_name(job.state),
        job.adapter_name,
        progress,
        f"{job.latest_metrics.loss:.4f}" if job.HasField("latest_metrics") else "",
        adapter,
    ]


def _jobs_table(jobs: list[pb.TrainingJob], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "state", "adapter", "step", "loss", "result"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(*_job_row(job))
    return table


def _describe_job(job: pb.TrainingJob) -> None:
    out.print(_jobs_table([job], f"job {job.id}"))
    if job.HasField("error"):
        err.print(f"[red]{job.error.reason}[/red]: {job.error.message}", highlight=False)
    if job.restart_count:
        out.print(f"restarted {job.restart_count} times from a checkpoint")


def _event_line(event: pb.JobEvent) -> str:
    kind = event.WhichOneof("payload")
    if kind == "state_change":
        change = event.state_change
        text = f"state {state_name(change.previous_state)} -> {state_name(change.state)}"
        if change.HasField("error"):
            text += f": {change.error.reason}: {change.error.message.splitlines()[0] if change.error.message else ''}"
        if change.HasField("result_adapter"):
            text += f": {change.result_adapter.name} version {change.result_adapter.version}"
        return text
    if kind == "step_metrics":
        m = event.step_metrics
        return f"step {m.step} loss {m.loss:.4f} lr {m.learning_rate:.2e} {m.tokens_per_second:.0f} tok/s"
    if kind == "checkpoint_saved":
        return f"checkpoint {event.checkpoint_saved.name} ({event.checkpoint_saved.size_bytes} bytes)"
    if kind == "eval_result":
        return f"eval at step {event.eval_result.step}: loss {event.eval_result.eval_loss:.4f}"
    if kind == "log":
        return f"{pb.LogLevel.Name(event.log.level).removeprefix('LOG_LEVEL_').lower()}: {event.log.message}"
    return kind or ""


async def _follow(client: TrainingClient, job_id: str, show_progress: bool) -> pb.TrainingJob:
    """Watch a job to its end (resuming a dropped stream), with a live progress bar when asked."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=err,
        disable=not show_progress,
        transient=False,
    )
    last = 0
    with progress:
        task = progress.add_task(job_id, total=None, stats="queued")
        while True:
            try:
                async for event in client.watch_job(job_id, after_sequence=last):
                    last = event.sequence
                    kind = event.WhichOneof("payload")
                    if kind == "step_metrics":
                        m = event.step_metrics
                        eta = f" ETA {m.eta.seconds}s" if m.HasField("eta") else ""
                        total = progress.tasks[0].total or m.step  # unknown (None) until the worker reports it
                        progress.update(
                            task,
                            completed=m.step,
                            total=total,
                            stats=f"step {m.step}/{total:.0f} loss {m.loss:.4f} {m.tokens_per_second:.0f} tok/s{eta}",
                        )
                    elif kind in ("state_change", "log"):  # the total is known once the worker has started
                        job = await client.get_job(job_id)
                        if job.progress.total_steps:
                            progress.update(task, total=job.progress.total_steps)
                        if kind == "state_change":
                            progress.update(task, stats=state_name(event.state_change.state).lower())
                    elif kind == "checkpoint_saved" and show_progress:
                        progress.console.print(f"  saved {event.checkpoint_saved.name}", highlight=False)
            except Unavailable:
                pass
            job = await client.get_job(job_id)
            if job.state in TERMINAL_STATES:
                if job.progress.total_steps:
                    progress.update(task, total=job.progress.total_steps, completed=job.progress.step)
                return job


def _finish(job: pb.TrainingJob, as_json: bool) -> None:
    if as_json:
        print_json(job_json(job))
    else:
        _describe_job(job)
    if job.state != pb.TrainingJob.STATE_SUCCEEDED:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    datasets = typer.Typer(help="Upload and inspect training datasets.", no_args_is_help=True)
    jobs = typer.Typer(help="List, inspect, watch and cancel training jobs.", no_args_is_help=True)
    adapters = typer.Typer(help="Registered adapter versions and their aliases.", no_args_is_help=True)
    app.add_typer(datasets, name="datasets")
    app.add_typer(jobs, name="jobs")
    app.add_typer(adapters, name="adapters")

    # --- datasets ---------------------------------------------------------------------------------------------

    @datasets.command("upload")
    def datasets_upload(
        file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A JSONL file, one row per line.")],
        name: Annotated[str | None, typer.Option(help="Dataset name (default: the file name without suffix).")] = None,
        dataset_format: Annotated[
            str | None, typer.Option("--format", help="chat or completion (default: guessed).")
        ] = None,
        base_model: Annotated[str, typer.Option(help="Model whose tokenizer measures rows (default: service's).")] = "",
        max_length: Annotated[int | None, typer.Option(help="Length the truncation count refers to (2048).")] = None,
        validate_only: Annotated[
            bool, typer.Option("--validate-only", help="Check and measure; store nothing.")
        ] = False,
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """Validate, measure and store FILE under its content version. Exits 1 when rows have errors."""
        if dataset_format is not None and dataset_format not in ("chat", "completion"):
            raise typer.BadParameter("use chat or completion", param_hint="--format")

        async def call() -> pb.UploadDatasetResponse:
            async with TrainingClient(address) as client:
                return await client.upload_dataset(
                    file,
                    name=name,
                    format=cast(DatasetFormat | None, dataset_format),
                    base_model=base_model,
                    max_length=max_length,
                    validate_only=validate_only,
                )

        response = run_rpc(call)
        if as_json:
            print_json(to_dict(response))
        else:
            _print_dataset(response.dataset)
            out.print("stored" if response.created else "already stored" if response.dataset.version else "not stored")
        if response.dataset.validation_report.error_count:
            raise typer.Exit(1)

    @datasets.command("list")
    def datasets_list(
        name: Annotated[str, typer.Option(help="Only this name's versions.")] = "",
        limit: Annotated[int, typer.Option(help="Most datasets to show.")] = 100,
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """Datasets, newest first."""

        async def call() -> pb.ListDatasetsResponse:
            async with TrainingClient(address) as client:
                return await client.list_datasets(name, page_size=limit)

        response = run_rpc(call)
        if as_json:
            print_json(to_dict(response))
            return
        table = Table(title=f"{len(response.datasets)} datasets")
        for column in ("name", "version", "format", "rows", "tokens", "errors", "created"):
            table.add_column(column, overflow="fold")
        for d in response.datasets:
            table.add_row(
                d.name,
                d.version[:16],
                _format_name(d.format),
                str(d.row_count),
                str(d.token_statistics.total_tokens),
                str(d.validation_report.error_count),
                d.create_time.ToDatetime().isoformat(timespec="seconds"),
            )
        out.print(table)

    @datasets.command("get")
    def datasets_get(
        name: Annotated[str, typer.Argument(help="Dataset name.")],
        version: Annotated[str, typer.Argument(help="Version or 12+ digit prefix (default: latest).")] = "",
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """One dataset version with its statistics and validation report."""

        async def call() -> pb.Dataset:
            async with TrainingClient(address) as client:
                return await client.get_dataset(name, version)

        dataset = run_rpc(call)
        if as_json:
            print_json(to_dict(dataset))
        else:
            _print_dataset(dataset)

    # --- train ------------------------------------------------------------------------------------------------

    @app.command()
    def train(
        dataset: Annotated[
            str,
            typer.Option("--dataset", help="A dataset version (or 12+ digit prefix), or a JSONL file to upload first."),
        ],
        name: Annotated[str, typer.Option("--name", help="The adapter name the result is registered under.")],
        method: Annotated[str, typer.Option(help="lora, qlora (GPU) or dora.")] = "lora",
        epochs: Annotated[float | None, typer.Option(help="Passes over the data (default 1).")] = None,
        learning_rate: Annotated[
            float | None, typer.Option("--learning-rate", help="Peak learning rate (2e-4).")
        ] = None,
        rank: Annotated[int | None, typer.Option(help="LoRA rank (8).")] = None,
        max_steps: Annotated[
            int | None, typer.Option("--max-steps", help="Optimizer steps, overriding epochs.")
        ] = None,
        batch_size: Annotated[int | None, typer.Option("--batch-size", help="Rows per device per step (4).")] = None,
        max_length: Annotated[
            int | None, typer.Option("--max-length", help="Longest sequence in tokens (2048).")
        ] = None,
        save_steps: Annotated[int | None, typer.Option("--save-steps", help="Checkpoint every N steps.")] = None,
        base_model: Annotated[str, typer.Option("--base-model", help="Base model id or path (default SmolLM2).")] = "",
        gpus: Annotated[
            int | None, typer.Option("--gpus", help="GPUs to train on (default: 1 if any, else CPU).")
        ] = None,
        priority: Annotated[int, typer.Option(help="-100..100; higher starts first.")] = 0,
        wait: Annotated[bool, typer.Option("--wait", help="Follow the job with a progress bar until it ends.")] = False,
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """Fine-tune an adapter. Returns the queued job, or with --wait the finished one (exit 1 unless SUCCEEDED)."""
        if method not in ("lora", "qlora", "dora"):
            raise typer.BadParameter("use lora, qlora or dora", param_hint="--method")
        hyperparameters: dict[str, Any] = {
            "epochs": epochs,
            "learning_rate": learning_rate,
            "rank": rank,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "max_length": max_length,
            "save_steps": save_steps,
        }

        async def call() -> pb.TrainingJob:
            async with TrainingClient(address) as client:
                version = dataset
                path = Path(dataset)
                if path.is_file():
                    uploaded = await client.upload_dataset(
                        path, format=guess_format(path), base_model=base_model, max_length=max_length
                    )
                    if uploaded.dataset.validation_report.error_count:
                        _print_dataset(uploaded.dataset)
                        raise typer.Exit(1)
                    version = uploaded.dataset.version
                    if not as_json:
                        out.print(
                            f"dataset {uploaded.dataset.name} {version[:16]} "
                            f"({'uploaded' if uploaded.created else 'already stored'})"
                        )
                job = await client.create_job(
                    dataset_version=version,
                    adapter_name=name,
                    base_model=base_model,
                    method=cast(Method, method),
                    priority=priority,
                    gpu_count=gpus,
                    **{k: v for k, v in hyperparameters.items() if v is not None},
                )
                if not wait:
                    return job
                if not as_json:
                    out.print(f"job {job.id} queued (trace {job.trace_id})")
                return await _follow(client, job.id, show_progress=not as_json)

        job = run_rpc(call)
        if wait:
            _finish(job, as_json)
        elif as_json:
            print_json(job_json(job))
        else:
            out.print(f"job {job.id} {state_name(job.state)}; follow it with `lorag jobs watch {job.id}`")

    # --- jobs -------------------------------------------------------------------------------------------------

    @jobs.command("list")
    def jobs_list(
        state: Annotated[
            list[str] | None, typer.Option("--state", help="Only jobs in this state (repeatable).")
        ] = None,
        adapter: Annotated[str, typer.Option(help="Only jobs registering this adapter name.")] = "",
        limit: Annotated[int, typer.Option(help="Most jobs to show.")] = 100,
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """Training jobs, newest first."""
        states = [s.upper() for s in state or []]
        for s in states:
            if "STATE_" + s.removeprefix("STATE_") not in pb.TrainingJob.State.DESCRIPTOR.values_by_name:
                raise typer.BadParameter("use QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED", param_hint="--state")

        async def call() -> pb.ListTrainingJobsResponse:
            async with TrainingClient(address) as client:
                return await client.list_jobs(states=states, adapter_name=adapter, page_size=limit)

        response = run_rpc(call)
        if as_json:
            print_json(
                {
                    "training_jobs": [job_json(j) for j in response.training_jobs],
                    "next_page_token": response.next_page_token,
                }
            )
        else:
            out.print(_jobs_table(list(response.training_jobs), f"{len(response.training_jobs)} jobs"))

    @jobs.command("get")
    def jobs_get(
        job_id: Annotated[str, typer.Argument(help="Job id.")], address: Address = None, as_json: Json = False
    ) -> None:
        """One job: state, progress, metrics, result or error."""

        async def call() -> pb.TrainingJob:
            async with TrainingClient(address) as client:
                return await client.get_job(job_id)

        job = run_rpc(call)
        if as_json:
            print_json(job_json(job))
        else:
            _describe_job(job)

    @jobs.command("watch")
    def jobs_watch(
        job_id: Annotated[str, typer.Argument(help="Job id.")],
        after: Annotated[int, typer.Option("--after", help="Resume after this event sequence.")] = 0,
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """Print the job's events as they happen, until it ends (JSON: one event per line)."""
        import json

        async def call() -> pb.TrainingJob:
            async with TrainingClient(address) as client:
                async for event in client.watch_job(job_id, after_sequence=after):
                    if as_json:
                        print(json.dumps(_strip_states(to_dict(event))), flush=True)
                    else:
                        out.print(f"{event.sequence:>5} {_event_line(event)}", highlight=False)
                return await client.get_job(job_id)

        job = run_rpc(call)
        if job.state in (pb.TrainingJob.STATE_FAILED, pb.TrainingJob.STATE_CANCELLED):
            raise typer.Exit(1)

    @jobs.command("cancel")
    def jobs_cancel(
        job_id: Annotated[str, typer.Argument(help="Job id.")], address: Address = None, as_json: Json = False
    ) -> None:
        """Cancel a queued or running job (a running one stops within seconds)."""

        async def call() -> pb.TrainingJob:
            async with TrainingClient(address) as client:
                return await client.cancel_job(job_id)

        job = run_rpc(call)
        if as_json:
            print_json(job_json(job))
        else:
            out.print(f"job {job.id} {state_name(job.state)}")

    # --- adapters ---------------------------------------------------------------------------------------------

    @adapters.command("list")
    def adapters_list(
        name: Annotated[str, typer.Argument(help="Only this adapter's versions.")] = "",
        limit: Annotated[int, typer.Option(help="Most versions to show.")] = 100,
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """Registered adapter versions with aliases and lineage."""

        async def call() -> pb.ListAdapterVersionsResponse:
            async with TrainingClient(address) as client:
                return await client.list_adapter_versions(name, page_size=limit)

        response = run_rpc(call)
        if as_json:
            print_json(to_dict(response))
            return
        table = Table(title=f"{len(response.adapter_versions)} adapter versions")
        for column in ("name", "version", "aliases", "dataset", "job", "eval loss", "source"):
            table.add_column(column, overflow="fold")
        for v in response.adapter_versions:
            loss = v.lineage.eval_metrics.get("eval_loss")
            table.add_row(
                v.name,
                v.version,
                ", ".join(v.aliases),
                v.lineage.dataset_version[:12],
                v.lineage.job_id,
                f"{loss:.4f}" if loss is not None else "",
                v.source_uri,
            )
        out.print(table)

    @adapters.command("get")
    def adapters_get(
        reference: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME@VERSION.")],
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """Resolve a reference to one version."""

        async def call() -> pb.AdapterVersion:
            async with TrainingClient(address) as client:
                return await client.get_adapter_version(reference)

        version = run_rpc(call)
        if as_json:
            print_json(to_dict(version))
        else:
            out.print(f"{version.name} version {version.version} {list(version.aliases)} {version.source_uri}")

    @adapters.command("alias")
    def adapters_alias(
        target: Annotated[str, typer.Argument(help="NAME@ALIAS, e.g. faq@production.")],
        version: Annotated[str, typer.Argument(help="The version the alias will point at.")],
        address: Address = None,
        as_json: Json = False,
    ) -> None:
        """Point an alias at a version (generation services following the alias switch to it)."""
        name, _, alias = target.partition("@")
        if not name or not alias:
            raise typer.BadParameter("write NAME@ALIAS", param_hint="NAME@ALIAS")

        async def call() -> pb.AdapterVersion:
            async with TrainingClient(address) as client:
                return await client.set_alias(name, alias, version)

        result = run_rpc(call)
        if as_json:
            print_json(to_dict(result))
        else:
            out.print(f"{name}@{alias} -> version {result.version}")

    @adapters.command("unalias")
    def adapters_unalias(
        target: Annotated[str, typer.Argument(help="NAME@ALIAS to remove.")], address: Address = None
    ) -> None:
        """Remove an alias; the version it pointed at stays."""
        name, _, alias = target.partition("@")
        if not name or not alias:
            raise typer.BadParameter("write NAME@ALIAS", param_hint="NAME@ALIAS")

        async def call() -> None:
            async with TrainingClient(address) as client:
                await client.delete_alias(name, alias)

        run_rpc(call)
        out.print(f"removed {name}@{alias}")
