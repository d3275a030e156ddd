"""The fine-tuning loop: a plain torch loop over a peft model, built for exact resume and near-zero overhead.

Why not transformers.Trainer: a plain loop lets the data position be a pure function of the optimizer step (so a
checkpoint resumes bit-exactly), keeps the only host syncs at the logging steps (the loss and grad-norm reported),
and adds nothing per step beyond what a hand-written transformers + peft script does.

Schedule: linear warmup over ceil(warmup_ratio * total_steps) steps, then linear decay to 0 (the Trainer default).
Gradients are clipped at norm 1.0; the grad_norm reported is the norm before clipping. With gradient accumulation
the loss is normalised by the label tokens of the whole accumulation window, so it equals one big batch's loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
import torch

from lorag_training.worker import checkpoints
from lorag_training.worker.data import (
    IGNORE_INDEX,
    Example,
    Schedule,
    collate,
    encode_rows,
    file_digest,
    make_schedule,
    read_rows,
    split_indices,
)
from lorag_training.worker.events import EventWriter
from lorag_training.worker.model import (
    DistContext,
    choose_device,
    choose_dtype,
    dist_backend,
    load_model,
    load_tokenizer,
    quantization_config,
)
from lorag_training.worker.spec import WorkerError, WorkerSpec
from lorag_training.worker.tracking import RunTracker

log = structlog.get_logger("lorag.training.worker")

MAX_GRAD_NORM = 1.0
REGISTERED_FILE = "registered.json"


class Terminated(BaseException):
    """SIGTERM arrived: stop now, write no "failed" event (the service records the cancellation)."""


class Termination:
    """SIGTERM raises Terminated at once, except inside a critical section (an event line or a checkpoint being
    written), where it is raised as soon as the section ends, so no file is left half-written by a cancel."""

    def __init__(self) -> None:
        self._depth = 0
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.requested = True
        if self._depth == 0:
            raise Terminated()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and self.requested:
                raise Terminated()


class GuardedEvents:
    """The event writer with each line written inside a critical section."""

    def __init__(self, writer: EventWriter, termination: Termination) -> None:
        self.writer = writer
        self.termination = termination

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        with self.termination.critical():
            return self.writer.emit(type_, **fields)

    def log(self, level: str, message: str) -> None:
        self.emit("log", level=level, message=message)


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warmup to the peak, then linear decay to zero at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1) if warmup_steps else 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def label_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that carry loss (labels after the causal shift), counted on the host before the batch moves."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


@dataclass
class Prepared:
    train: list[Example]
    eval: list[Example]
    digest: str
    dropped: int


def prepare_data(spec: WorkerSpec, tokenizer: Any, rows: list[dict[str, Any]]) -> Prepared:
    hp = spec.hyperparameters
    train_idx, eval_idx = split_indices(len(rows), hp.eval_split_fraction, hp.seed)
    train, dropped = encode_rows(tokenizer, [rows[i] for i in train_idx], spec.dataset_format, hp.max_length)
    evals: list[Example] = []
    if eval_idx:
        try:
            evals, _ = encode_rows(tokenizer, [rows[i] for i in eval_idx], spec.dataset_format, hp.max_length)
        except WorkerError:
            evals = []  # held-out rows with nothing to score: no evaluation rather than a failed job
    return Prepared(train, evals, file_digest(spec.dataset_path), dropped)


def epoch_order(n: int, ctx: DistContext, seed: int, epoch: int) -> list[int]:
    """This rank's rows for an epoch, in order: a DistributedSampler shuffle seeded by (seed, epoch), so the order
    is a pure function of the epoch and a resumed job sees exactly the batches it would have."""
    from torch.utils.data import DistributedSampler

    rows: Any = range(n)  # the sampler reads only len() of its dataset
    sampler = DistributedSampler[int](rows, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return list(sampler)


class Trainer:
    """One job's training, from a loaded spec to a registered adapter."""

    def __init__(
        self, spec: WorkerSpec, ctx: DistContext, events: GuardedEvents, termination: Termination, tracer: Any
    ) -> None:
        self.spec = spec
        self.hp = spec.hyperparameters
        self.ctx = ctx
        self.events = events
        self.termination = termination
        self.tracer = tracer
        self.tracker = RunTracker(spec, enabled=ctx.is_main)

    # -- setup ----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        spec, hp, ctx = self.spec, self.hp, self.ctx
        registered = spec.output_dir / REGISTERED_FILE
        if registered.exists() and ctx.is_main:  # crashed between registering and reporting: report, once
            done = json.loads(registered.read_text(encoding="utf-8"))
            return self.events.emit("completed", adapter=done["adapter"], mlflow_run_id=done["mlflow_run_id"])

        from lorag_models import ModelNotFound, resolve_model

        rows = read_rows(spec.dataset_path, spec.dataset_format)  # bad data fails before the model loads
        device = choose_device(spec.devices, ctx, torch.cuda.device_count() if torch.cuda.is_available() else 0)
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        dtype = choose_dtype(device, device.startswith("cuda") and torch.cuda.is_bf16_supported())
        if ctx.distributed and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(dist_backend(device))
        with self.tracer.start_as_current_span("training.load_model") as span:
            try:
                resolved = resolve_model(spec.base_model)
                tokenizer = load_tokenizer(resolved.path)
                quantization_config(spec.method, device, dtype)  # QLoRA without CUDA fails before the load
            except (ModelNotFound, OSError) as exc:
                raise WorkerError("BASE_MODEL_NOT_FOUND", f"cannot load base model {spec.base_model!r}: {exc}") from exc
            seed_everything(hp.seed)  # the adapter's initial weights follow the seed
            model = load_model(resolved.path, spec.method, hp, device, dtype)
            model.peft_config["default"].base_model_name_or_path = resolved.model_id
            span.set_attributes(
                {
                    "lorag.base_model": resolved.model_id,
                    "lorag.device": device,
                    "lorag.dtype": str(dtype),
                    "lorag.method": spec.method,
                }
            )
        with self.tracer.start_as_current_span("training.prepare_data") as span:
            data = prepare_data(spec, tokenizer, rows)
            span.set_attributes({"lorag.train_rows": len(data.train), "lorag.eval_rows": len(data.eval)})
        n_rank = math.ceil(len(data.train) / ctx.world_size)
        schedule = make_schedule(n_rank, hp.batch_size, hp.gradient_accumulation_steps, hp.epochs, hp.max_steps)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=0.0)
        warmup = math.ceil(hp.warmup_ratio * schedule.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(schedule.total_steps, warmup))

        start_step = 0
        latest = checkpoints.latest_complete(spec.checkpoints_dir)
        if latest is not None:
            state = checkpoints.load(latest, model, optimizer, scheduler, ctx.rank)
            start_step = int(state["step"])
            if state.get("total_steps") != schedule.total_steps or state.get("world_size") != ctx.world_size:
                self.events.log("warning", f"{latest.name} was saved with a different schedule or world size")
        run_id = self.tracker.start(resolved.revision, data.digest, resolved.model_id)
        self.events.emit(
            "started",
            total_steps=schedule.total_steps,
            resumed_from_step=start_step,
            mlflow_run_id=run_id,
            base_model_revision=resolved.revision,
        )
        if start_step and latest is not None:
            self.events.log("warning", f"resumed from {latest.name}")
        if data.dropped:
            self.events.log("warning", f"{data.dropped} training rows have no trainable token within max_length")
        self.events.log(
            "info",
            f"training {spec.method} on {device} ({str(dtype).removeprefix('torch.')}): {len(data.train)} train rows, "
            f"{len(data.eval)} eval rows, {schedule.total_steps} steps, {sum(p.numel() for p in params):,} "
            "trainable parameters",
        )

        train_model = model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            train_model = DistributedDataParallel(
                model, device_ids=[int(device.split(":")[1])] if ":" in device else None
            )
        with self.tracer.start_as_current_span("training.train") as span:
            span.set_attributes({"lorag.total_steps": schedule.total_steps, "lorag.resumed_from_step": start_step})
            last_eval = self._train(
                model, train_model, optimizer, scheduler, schedule, data, tokenizer, device, start_step
            )
        if not ctx.is_main:
            return {}
        return self._finish(model, resolved, data, last_eval)

    # -- the loop -------------------------------------------------------------------------------------------

    def _train(
        self,
        model: Any,
        train_model: Any,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        schedule: Schedule,
        data: Prepared,
        tokenizer: Any,
        device: str,
        start_step: int,
    ) -> dict[str, float]:
        hp, ctx = self.hp, self.ctx
        pad_id = tokenizer.pad_token_id
        non_blocking = device.startswith("cuda")
        total = schedule.total_steps
        order: list[int] = []
        order_epoch = -1
        last_eval: dict[str, float] = {}
        eval_at = -1

        interval_loss = torch.zeros((), device=device)
        interval_tokens = 0
        interval_steps = 0
        interval_time = 0.0
        grad_norm: torch.Tensor | None = None
        t0 = time.perf_counter()
        train_model.train()
        for step in range(start_step, total):
            epoch, first = schedule.position(step)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(len(data.train), ctx, hp.seed, epoch), epoch
            last = min(first + schedule.accumulation, schedule.batches_per_epoch)
            batches = [
                collate([data.train[i] for i in order[b * hp.batch_size : (b + 1) * hp.batch_size]], pad_id)
                for b in range(first, last)
            ]
            batches = [b for b in batches if b["input_ids"].numel()]
            window = max(1, sum(label_tokens(b) for b in batches))
            for i, batch in enumerate(batches):
                sync = contextlib.nullcontext()
                if ctx.distributed and i < len(batches) - 1:
                    sync = train_model.no_sync()
                with sync:
                    n_labels = label_tokens(batch)
                    interval_tokens += int(batch["attention_mask"].sum())
                    moved = {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}
                    out = train_model(**moved)
                    loss = out.loss * (n_labels / window)
                    loss.backward()
                interval_loss += loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            interval_steps += 1
            done = step + 1

            if done % hp.logging_steps == 0 or done == total:
                mean_loss, gnorm, tokens = self._reduce(interval_loss, grad_norm, interval_tokens, interval_steps)
                interval_time += time.perf_counter() - t0
                tps = tokens / interval_time if interval_time > 0 else 0.0
                per_step = interval_time / interval_steps
                metrics = {
                    "loss": mean_loss,
                    "learning_rate": lr,
                    "grad_norm": gnorm,
                    "tokens_per_second": tps,
                }
                self.events.emit(
                    "step",
                    step=done,
                    total_steps=total,
                    epoch=schedule.epoch_at(done),
                    eta_seconds=per_step * (total - done),
                    **metrics,
                )
                self.tracker.log_metrics(metrics, done)
                interval_loss = torch.zeros((), device=device)
                interval_tokens = interval_steps = 0
                interval_time = 0.0
                t0 = time.perf_counter()

            epoch_end = done % schedule.steps_per_epoch == 0
            paused = time.perf_counter()
            if data.eval and ((hp.eval_steps and done % hp.eval_steps == 0) or (not hp.eval_steps and epoch_end)):
                last_eval = self._evaluate(model, data, pad_id, device, done, schedule)
                eval_at = done
                train_model.train()
            if (hp.save_steps and done % hp.save_steps == 0) or (not hp.save_steps and epoch_end):
                self._checkpoint(model, optimizer, scheduler, done, schedule)
            t0 += time.perf_counter() - paused  # evaluation and checkpoints do not count as training time
        if data.eval and eval_at != total:
            last_eval = self._evaluate(model, data, pad_id, device, total, schedule)
        return last_eval

    def _reduce(
        self, loss_sum: torch.Tensor, grad_norm: torch.Tensor | None, tokens: int, steps: int
    ) -> tuple[float, float, int]:
        """The only host sync of the loop: the interval's mean loss (over ranks), the last grad norm, tokens."""
        if self.ctx.distributed:
            packed = torch.stack([loss_sum.float(), torch.tensor(float(tokens), device=loss_sum.device)])
            torch.distributed.all_reduce(packed)
            loss_value = float(packed[0]) / self.ctx.world_size
            tokens = int(packed[1])
        else:
            loss_value = float(loss_sum)
        gnorm = float(grad_norm) if grad_norm is not None else 0.0
        return loss_value / max(1, steps), gnorm, tokens

    def _evaluate(
        self, model: Any, data: Prepared, pad_id: int, device: str, step: int, schedule: Schedule
    ) -> dict[str, float]:
        with self.tracer.start_as_current_span("training.evaluate") as span:
            model.eval()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            count = 0
            bs = self.hp.batch_size
            with torch.no_grad():
                for start in range(0, len(data.eval), bs):
                    batch = collate(data.eval[start : start + bs], pad_id)
                    n = label_tokens(batch)
                    moved = {k: v.to(device) for k, v in batch.items()}
                    out = model(**moved)
                    loss_sum += out.loss.double() * n
                    shifted = moved["labels"][:, 1:]
                    pred = out.logits[:, :-1].argmax(-1)
                    correct += ((pred == shifted) & (shifted != IGNORE_INDEX)).sum()
                    count += n
            eval_loss = float(loss_sum) / max(1, count)
            accuracy = float(correct) / max(1, count)
            perplexity = math.exp(eval_loss) if eval_loss < 700 else float("inf")
            span.set_attributes({"lorag.step": step, "lorag.eval_loss": eval_loss, "lorag.eval_tokens": count})
            result = {"eval_loss": eval_loss, "perplexity": perplexity, "eval_token_accuracy": accuracy}
            self.events.emit(
                "eval",
                step=step,
                epoch=schedule.epoch_at(step),
                eval_loss=eval_loss,
                perplexity=perplexity,
                metrics={"eval_token_accuracy": accuracy, "eval_tokens": float(count)},
            )
            self.tracker.log_metrics(result, step)
            return result

    def _checkpoint(self, model: Any, optimizer: Any, scheduler: Any, step: int, schedule: Schedule) -> None:
        ctx = self.ctx
        rngs = [checkpoints.rng_state()]
        if ctx.distributed:
            gathered: list[Any] = [None] * ctx.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if ctx.is_main:
            with self.tracer.start_as_current_span("training.checkpoint") as span, self.termination.critical():
                epoch, next_batch = schedule.position(step)
                state = {
                    "step": step,
                    "epoch": schedule.epoch_at(step),
                    "data_epoch": epoch,
                    "next_batch": next_batch,
                    "total_steps": schedule.total_steps,
                    "world_size": ctx.world_size,
                    "seed": self.hp.seed,
                }
                saved = checkpoints.save(self.spec.checkpoints_dir, step, model, optimizer, scheduler, state, rngs)
                span.set_attributes({"lorag.step": step, "lorag.size_bytes": saved.size_bytes})
            self.events.emit(
                "checkpoint",
                name=saved.name,
                step=step,
                epoch=schedule.epoch_at(step),
                uri=str(saved.path),
                size_bytes=saved.size_bytes,
                has_optimizer_state=True,
            )
        if ctx.distributed:
            torch.distributed.barrier()

    # -- the end --------------------------------------------------------------------------------------------

    def _finish(self, model: Any, resolved: Any, data: Prepared, last_eval: dict[str, float]) -> dict[str, Any]:
        from lorag_training.registry import AdapterRegistry

        spec = self.spec
        with self.tracer.start_as_current_span("training.register") as span:
            adapter_dir = spec.adapter_dir
            model.save_pretrained(adapter_dir)
            self.tracker.flush()
            lineage = {
                "dataset_version": spec.dataset_version,
                "dataset_digest": data.digest,
                "base_model": resolved.model_id,
                "base_model_revision": resolved.revision,
                "job_id": spec.job_id,
                "method": spec.method,
                **{k: v for k, v in self.hp.as_params().items()},
                **{k: repr(float(v)) for k, v in last_eval.items()},
            }
            if spec.extra.get("dataset_name"):
                lineage["dataset_name"] = str(spec.extra["dataset_name"])
            registry = AdapterRegistry(spec.mlflow.tracking_uri, spec.mlflow.registry_uri)
            try:
                record = registry.register(
                    spec.adapter_name, str(adapter_dir), self.tracker.run_id, lineage, description=spec.display_name
                )
            except Exception as exc:
                raise WorkerError(
                    "REGISTRATION_FAILED", f"cannot register adapter {spec.adapter_name!r}: {exc}"
                ) from exc
            span.set_attributes({"lorag.adapter": spec.adapter_name, "lorag.adapter_version": record.version})
        adapter = {"name": record.name, "version": record.version, "source_uri": record.source_uri}
        with self.termination.critical():
            tmp = spec.output_dir / (REGISTERED_FILE + ".tmp")
            tmp.write_text(json.dumps({"adapter": adapter, "mlflow_run_id": self.tracker.run_id}), encoding="utf-8")
            os.replace(tmp, spec.output_dir / REGISTERED_FILE)
        self.events.log("info", f"registered {record.name} version {record.version}")
        event = self.events.emit("completed", adapter=adapter, mlflow_run_id=self.tracker.run_id)
        self.tracker.finish("FINISHED")
        return event


def finish_in_background(tracker: RunTracker, status: str, timeout: float = 2.0) -> None:
    """Mark the run on the way out without letting a slow tracking server delay the exit."""
    thread = threading.Thread(target=tracker.finish, args=(status,), daemon=True)
    thread.start()
    thread.join(timeout)
