"""`python -m lorag_training.worker SPEC_PATH` (or under torchrun): run one training job, report it as events.

Exit status: 0 after "completed"; 1 after "failed"; 143 on SIGTERM (no "failed": the service records the
cancellation); 2 when no spec path is given.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from lorag_training.worker.events import EventWriter

if TYPE_CHECKING:
    from opentelemetry.context import Context

OOM_HINT = "lower hyperparameters.batch_size or max_length (or raise gradient_accumulation_steps to keep the batch)"


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def failure_of(exc: BaseException) -> tuple[str, str]:
    """(reason, message) of the "failed" event for an exception that ended training."""
    from lorag_training.worker.spec import WorkerError

    if isinstance(exc, WorkerError):
        return exc.reason, exc.message
    if _is_oom(exc):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return "OUT_OF_MEMORY", f"out of memory: {first[:300]}; {OOM_HINT}"
    return "TRAINING_ERROR", f"{type(exc).__name__}: {exc}"


def _trace_context() -> Context:
    """The job's trace from the W3C TRACEPARENT the scheduler set, so the worker's spans join it."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": os.environ.get("TRACEPARENT", "")}
    if os.environ.get("TRACESTATE"):
        carrier["tracestate"] = os.environ["TRACESTATE"]
    return TraceContextTextMapPropagator().extract(carrier)


def set_thread_wait_policy(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """OpenMP threads spin between parallel regions (ACTIVE) in a worker: it owns its cores for the whole job, and
    PASSIVE waits (the chassis default for request-driven servers, inherited through the service's environment)
    cost about 25-30 % of CPU training throughput here. LORAG_TRAINING_WORKER_OMP_WAIT_POLICY overrides it. Must
    run before torch is imported: libgomp reads the variable when it loads."""
    policy = env.get("LORAG_TRAINING_WORKER_OMP_WAIT_POLICY", "ACTIVE")
    env["OMP_WAIT_POLICY"] = policy
    return policy


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "torch" not in sys.modules:
        set_thread_wait_policy()
    if len(argv) != 1:
        print("usage: python -m lorag_training.worker SPEC_PATH", file=sys.stderr)
        return 2
    spec_path = Path(argv[0])

    from lorag_training.worker.loop import GuardedEvents, Terminated, Termination, Trainer, finish_in_background
    from lorag_training.worker.model import dist_context
    from lorag_training.worker.spec import SpecError, WorkerError, load_spec

    termination = Termination()
    termination.install()
    try:
        ctx = dist_context()
        spec = load_spec(spec_path)
    except (SpecError, WorkerError) as exc:
        writer = EventWriter(spec_path.parent / "events.jsonl", enabled=os.environ.get("RANK", "0") == "0")
        writer.emit("failed", reason=exc.reason, message=exc.message)
        writer.close()
        return 1

    from opentelemetry import context as otel_context

    from lorag_core.telemetry import get_logger, setup_telemetry, shutdown_telemetry

    telemetry = setup_telemetry("training-worker", log_level=os.environ.get("LORAG_LOG_LEVEL", "INFO"))
    log = get_logger("lorag.training.worker")
    token = otel_context.attach(_trace_context())
    writer = EventWriter(spec.events_path, enabled=ctx.is_main)
    events = GuardedEvents(writer, termination)
    trainer = Trainer(spec, ctx, events, termination, telemetry.tracer)
    code = 0
    try:
        with telemetry.tracer.start_as_current_span("training.job") as span:
            span.set_attributes({"lorag.job_id": spec.job_id, "lorag.rank": ctx.rank, "lorag.method": spec.method})
            trainer.run()
    except Terminated:
        log.info("worker_terminated", job_id=spec.job_id)
        finish_in_background(trainer.tracker, "KILLED")
        writer.close()
        shutdown_telemetry()
        sys.stdout.flush()
        os._exit(143)  # at once: no waiting on logging threads or a process group teardown
    except BaseException as exc:
        reason, message = failure_of(exc)
        log.error("worker_failed", job_id=spec.job_id, reason=reason, error=message, traceback=traceback.format_exc())
        try:
            events.emit("failed", reason=reason, message=message)
        except Terminated:
            pass
        finish_in_background(trainer.tracker, "FAILED")
        code = 1
    finally:
        otel_context.detach(token)
        writer.close()
        _teardown_distributed()
        shutdown_telemetry()
    return code


def _teardown_distributed() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
