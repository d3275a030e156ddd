"""The continuous-batching decode loop, run by the one thread that owns the model.

Each iteration runs the adapter commands that arrived, admits waiting rows into the running batch (a prefill of
their own, then joined onto the running KV cache), runs one decode step for every row, and drops the rows that
finished: end of sequence, ``max_new_tokens`` or the context, a stop sequence, or the client going away. Each row's
new items reach its event loop once per step. A failed step fails its rows, never the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lorag_core.errors import Unavailable
from lorag_core.telemetry import get_logger
from lorag_generation.backends.base import Finished, FinishReason, TextDelta
from lorag_generation.backends.transformers.detokenize import IncrementalDetokenizer
from lorag_generation.backends.transformers.kv_cache import RunningBatch, left_padded, returned_cache
from lorag_generation.backends.transformers.loading import LoadedModel
from lorag_generation.backends.transformers.lora import LoraAdapters
from lorag_generation.backends.transformers.rows import Command, Inbox, Row, deliver, flush
from lorag_generation.backends.transformers.sampling import RowSampler, sample_rows
from lorag_generation.stops import StopMatcher

log = get_logger(__name__)

#: Called on the decode thread with the batch size of every decode step (for metrics).
OnStep = Callable[[int], None]


class DecodeLoop:
    """Everything the decode thread owns: the model and its adapters, the running batch and its KV cache."""

    def __init__(
        self,
        loaded: LoadedModel,
        inbox: Inbox,
        resident: set[str],
        *,
        max_batch_size: int,
        on_step: OnStep | None = None,
    ) -> None:
        self.loaded = loaded
        self.inbox = inbox
        self.max_batch_size = max_batch_size
        self.on_step = on_step
        self.adapters = LoraAdapters(loaded.model, loaded.device, resident)
        self.batch = RunningBatch(loaded.device, loaded.cache_argument)
        self.deferred_unloads: list[Command] = []

    # -- the loop ---------------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Decode until the inbox says stop; then finish every row left with CANCELLED."""
        import torch

        inbox, batch = self.inbox, self.batch
        while True:
            with inbox.cond:
                while not (inbox.pending or batch.rows or inbox.commands or inbox.stopping or self._runnable_unloads()):
                    inbox.cond.wait()
                if inbox.stopping:
                    break
                commands = list(inbox.commands)
                inbox.commands.clear()
                admitted: list[Row] = []
                if not batch.rows or batch.joinable:
                    while inbox.pending and len(batch.rows) + len(admitted) < self.max_batch_size:
                        row = inbox.pending.popleft()
                        if not row.cancelled:
                            admitted.append(row)
            try:
                for command in commands:
                    self._run_command(command)
                for command in self._runnable_unloads():
                    self.deferred_unloads.remove(command)
                    self._run_command(command)
                with torch.inference_mode():
                    if admitted:
                        self._prefill(admitted)
                    if batch.rows:
                        self._step()
            except BaseException as exc:  # a failed step fails its rows, not the service
                log.exception("decode step failed", rows=len(batch.rows) + len(admitted))
                for row in {*batch.rows, *admitted}:
                    self._fail(row, exc)
                batch.clear()
        self._shutdown()

    def _shutdown(self) -> None:
        inbox = self.inbox
        with inbox.cond:
            waiting = list(inbox.pending)
            inbox.pending.clear()
            commands = list(inbox.commands) + self.deferred_unloads
            inbox.commands.clear()
        for row in [*self.batch.rows, *waiting]:
            if not row.done:
                self._finish(row, FinishReason.CANCELLED)
            flush(row)
        for command in commands:
            command.future.set_exception(Unavailable("the generation service is shutting down", reason="SHUTTING_DOWN"))
        self.batch.clear()

    # -- adapter commands -------------------------------------------------------------------------------------------

    def _busy_adapters(self) -> set[str | None]:
        """Adapters that rows decoding or waiting use."""
        return {row.adapter for row in self.batch.rows} | {
            row.adapter for row in self.inbox.pending if not row.cancelled
        }

    def _runnable_unloads(self) -> list[Command]:
        if not self.deferred_unloads:
            return []
        busy = self._busy_adapters()
        return [c for c in self.deferred_unloads if c.name not in busy]

    def _run_command(self, command: Command) -> None:
        try:
            if command.kind == "load":
                assert command.files is not None
                self.adapters.load(command.name, command.files)
            else:
                if command.name in self._busy_adapters():  # jobs already decoding with it finish first
                    self.deferred_unloads.append(command)
                    return
                self.adapters.unload(command.name)
        except BaseException as exc:  # reported to the caller
            command.future.set_exception(exc)
        else:
            command.future.set_result(None)

    # -- prefill and steps ------------------------------------------------------------------------------------------

    def _prefill(self, admitted: list[Row]) -> None:
        """Prefill the admitted rows together, sample their first tokens, and join them onto the running batch."""
        loaded = self.loaded
        now = time.perf_counter_ns()
        for row in admitted:
            row.admitted_ns = now
            self._prepare_row(row)
        pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
        ids, mask, positions = left_padded([row.prompt_ids for row in admitted], pad, loaded.device)
        kwargs: dict[str, Any] = {"logits_to_keep": 1} if loaded.keeps_last_logits else {}
        out = self.adapters.forward(
            [row.adapter for row in admitted],
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **kwargs,
        )
        tokens = self._sample(out.logits[:, -1, :], admitted)
        self.batch.join(admitted, returned_cache(out), mask, tokens)
        first = time.perf_counter_ns()
        for row, token in zip(admitted, tokens, strict=True):
            row.first_token_ns = first
            self._accept(row, token)
        deliver(self.batch.rows)
        self._drop_finished()

    def _step(self) -> None:
        """One decode step of every row in the batch."""
        batch = self.batch
        if any(row.cancelled for row in batch.rows):
            self._drop_finished()
            if not batch.rows:
                return
        if self.on_step is not None:
            self.on_step(len(batch.rows))
        out = self.adapters.forward([row.adapter for row in batch.rows], **batch.step_inputs())
        tokens = self._sample(out.logits[:, -1, :], batch.rows)
        batch.advance(returned_cache(out), tokens)
        for row, token in zip(batch.rows, tokens, strict=True):
            self._accept(row, token)
        deliver(batch.rows)
        self._drop_finished()

    @staticmethod
    def _sample(logits: Any, rows: Sequence[Row]) -> list[int]:
        samplers: list[RowSampler] = []
        for row in rows:
            assert row.sampler is not None, "a row is prepared when it is admitted"
            samplers.append(row.sampler)
        return sample_rows(logits, samplers)

    def _prepare_row(self, row: Row) -> None:
        loaded = self.loaded
        row.detok = IncrementalDetokenizer(loaded.tokenizer, row.prompt_ids)
        row.stops = StopMatcher(row.sampling.stop_sequences)
        row.sampler = RowSampler(row.sampling, row.prompt_ids, device=loaded.device, vocab_size=loaded.vocab_size)

    def _drop_finished(self) -> None:
        """Remove finished and cancelled rows from the batch."""
        keep = [i for i, row in enumerate(self.batch.rows) if not (row.done or row.cancelled)]
        if len(keep) != len(self.batch.rows):
            self.batch.keep(keep)

    # -- a row's tokens and its end ---------------------------------------------------------------------------------

    def _accept(self, row: Row, token: int) -> None:
        """Account one sampled token of ``row``: end of sequence, text (through the stop matcher), limits."""
        if row.done or row.cancelled:
            return
        row.completion_tokens += 1
        assert row.sampler is not None and row.detok is not None and row.stops is not None
        row.sampler.observe(token)
        if token in self.loaded.eos_token_ids:
            self._finish(row, FinishReason.STOP)
            return
        row.unsent_tokens += 1
        emit, matched = row.stops.feed(row.detok.add(token))
        if emit:
            row.outbox.append(TextDelta(emit, row.unsent_tokens))
            row.unsent_tokens = 0
        if matched is not None:
            self._finish(row, FinishReason.STOP_SEQUENCE, matched)
        elif (
            row.completion_tokens >= row.sampling.max_new_tokens
            or len(row.prompt_ids) + row.completion_tokens >= self.loaded.max_context
        ):
            self._finish(row, FinishReason.LENGTH)

    def _finish(self, row: Row, reason: FinishReason, matched: str = "") -> None:
        if reason is not FinishReason.STOP_SEQUENCE and row.detok is not None and row.stops is not None:
            tail, late_match = row.stops.feed(row.detok.flush())
            tail += row.stops.flush()
            if late_match is not None:
                reason, matched = FinishReason.STOP_SEQUENCE, late_match
            if tail:
                row.outbox.append(TextDelta(tail, row.unsent_tokens))
                row.unsent_tokens = 0
        now = time.perf_counter_ns()
        admitted = row.admitted_ns or now
        row.outbox.append(
            Finished(
                finish_reason=reason,
                prompt_tokens=len(row.prompt_ids),
                completion_tokens=row.completion_tokens,
                matched_stop_sequence=matched,
                queue_ns=admitted - row.received_ns,
                inference_ns=now - admitted,
                time_to_first_token_ns=(row.first_token_ns - row.received_ns) if row.first_token_ns else 0,
            )
        )
        row.done = True
        self.inbox.release(row)

    def _fail(self, row: Row, exc: BaseException) -> None:
        if row.done:
            return
        row.done = True
        row.outbox.append(exc)
        self.inbox.release(row)
        flush(row)
