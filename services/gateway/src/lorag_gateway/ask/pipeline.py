"""The Ask flow: validate → retrieve → (no passages: stop) → fit the passages to the model's context → prompt →
stream the answer from the generation service → citations.

:meth:`AskPipeline.run` yields :class:`AnswerDelta` items as the generation service decodes them (forwarded at
once: the time to the first answer token is what a user waits for), then exactly one :class:`AnswerSummary`.
AskStream forwards the items; Ask collects them. Closing the iterator early (a client cancelled AskStream) cancels
the generation call, so its decode slot is freed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass, field

import grpc
from opentelemetry import metrics, trace

from lorag.common.v1 import common_pb2
from lorag.generation.v1 import generation_service_pb2 as generation_pb
from lorag_client import GenerationClient, RetrievalClient
from lorag_core.downstream import prefix_fields, renamed_fields
from lorag_core.errors import FieldViolation, InvalidArgument, LoragError
from lorag_core.telemetry import get_logger

from .citations import cited_numbers
from .prompting import (
    DEFAULT_TEMPLATE,
    MAX_QUESTION_CHARS,
    MAX_TEMPLATE_CHARS,
    TEMPLATES,
    ChatTurn,
    FittedContext,
    Passage,
    PromptTemplate,
    custom_template,
    fit_passages,
    missing_placeholders,
)

log = get_logger("lorag.gateway.ask")
tracer = trace.get_tracer("lorag.gateway.ask")

#: common.proto's defaults, used for span attributes and the context budget when a field is unset.
DEFAULT_TOP_K = 5
DEFAULT_MAX_NEW_TOKENS = 256

#: The stage recorded on the Degradation that reports passages left out or cut to fit the model's context.
CONTEXT_BUDGET_STAGE = common_pb2.RETRIEVAL_STAGE_CONTEXT

# Retrieve's request fields are Ask's under other names.
_RETRIEVAL_FIELDS = prefix_fields({"query": "question", "options": "retrieval"})
_ROLES = {"system": common_pb2.ROLE_SYSTEM, "user": common_pb2.ROLE_USER}


def _generation_field(name: str) -> str:
    """The generation request's prompt is built from the question (and template); sampling and adapter keep
    their names."""
    if name in ("chat", "prompt") or name.startswith(("chat.", "chat[", "prompt.")):
        return "question"
    return name


@dataclass(frozen=True)
class AskInput:
    """An AskRequest or AskStreamRequest: the question, its scope and settings (protos passed on as they are)."""

    question: str
    tenant: str
    collection: str
    retrieval: common_pb2.RetrievalOptions
    adapter: str = ""
    sampling: common_pb2.SamplingParams = field(default_factory=common_pb2.SamplingParams)
    template_name: str | None = None
    template_text: str | None = None
    answer_without_context: bool = False


@dataclass(frozen=True)
class AnswerDelta:
    """Answer text decoded since the previous delta, and the tokens it represents."""

    text: str
    token_count: int


@dataclass
class AnswerSummary:
    """Everything known once the answer is complete."""

    answer: str
    passages: list[Passage]
    cited: set[int]
    no_context: bool
    finish_reason: int = common_pb2.FINISH_REASON_UNSPECIFIED
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retrieve_ns: int = 0
    generate_ns: int = 0
    time_to_first_token_ns: int = 0
    total_ns: int = 0
    retrieval_timing: common_pb2.RetrievalTiming = field(default_factory=common_pb2.RetrievalTiming)
    generation_timing: common_pb2.Timing | None = None
    model: str = ""
    adapter: common_pb2.AdapterReference | None = None
    degradations: list[common_pb2.Degradation] = field(default_factory=list)


def resolve_template(ask: AskInput) -> PromptTemplate:
    """Check the question and template; raise ``InvalidArgument`` listing every violation, else the template."""
    violations: list[FieldViolation] = []
    if not ask.question or ask.question.isspace():
        violations.append(FieldViolation("question", "must not be empty or whitespace only"))
    elif len(ask.question) > MAX_QUESTION_CHARS:
        violations.append(
            FieldViolation("question", f"must be at most {MAX_QUESTION_CHARS} characters, got {len(ask.question)}")
        )
    template = TEMPLATES[DEFAULT_TEMPLATE]
    if ask.template_text is not None:
        missing = missing_placeholders(ask.template_text)
        if len(ask.template_text) > MAX_TEMPLATE_CHARS:
            violations.append(
                FieldViolation(
                    "template_text",
                    f"must be at most {MAX_TEMPLATE_CHARS} characters, got {len(ask.template_text)}",
                )
            )
        elif missing:
            names = " and ".join("{" + name + "}" for name in missing)
            violations.append(
                FieldViolation(
                    "template_text", f"must contain the placeholders {{question}} and {{context}}; {names} missing"
                )
            )
        else:
            template = custom_template(ask.template_text)
    elif ask.template_name:  # an empty name is the same as none: the default
        if ask.template_name not in TEMPLATES:
            known = ", ".join(sorted(TEMPLATES))
            violations.append(
                FieldViolation("template_name", f"unknown template {ask.template_name!r}; known: {known}")
            )
        else:
            template = TEMPLATES[ask.template_name]
    if violations:
        first = violations[0]
        more = f" ({len(violations) - 1} more)" if len(violations) > 1 else ""
        too_long = len(ask.question) > MAX_QUESTION_CHARS
        raise InvalidArgument(
            message=f"{first.field}: {first.description}{more}",
            metadata={"max_question_chars": str(MAX_QUESTION_CHARS)} if too_long else {},
            violations=violations,
        )
    return template


def passages_of(found: Iterable[common_pb2.ScoredChunk]) -> list[Passage]:
    """The retrieved chunks as passages numbered from 1, in retrieval order."""
    return [
        Passage(
            number=number,
            document_id=hit.chunk.document_id,
            chunk_id=hit.chunk.chunk_id,
            char_start=hit.chunk.char_start,
            char_end=hit.chunk.char_end,
            score=hit.score,
            title=hit.chunk.title,
            source_uri=hit.chunk.source_uri,
            text=hit.chunk.text,
        )
        for number, hit in enumerate(found, 1)
    ]


def context_degradation(
    fitted: FittedContext, given: int, max_context_tokens: int, max_new_tokens: int
) -> common_pb2.Degradation:
    """The Degradation telling the caller that passages were left out (or cut) to fit the model's context."""
    parts = []
    if fitted.dropped:
        parts.append(f"{fitted.dropped} of {given} passages left out")
    if fitted.cut:
        parts.append(f"passage [{len(fitted.passages)}] cut to {len(fitted.passages[-1].text)} characters")
    return common_pb2.Degradation(
        stage=CONTEXT_BUDGET_STAGE,
        reason=f"context budget: {' and '.join(parts)} so the prompt and max_new_tokens {max_new_tokens} fit the "
        f"model's context of {max_context_tokens} tokens",
    )


class AskPipeline:
    """Shared by every Ask of a gateway: the retrieval and generation clients and the cached model limits."""

    def __init__(
        self,
        retrieval: RetrievalClient,
        generation: GenerationClient,
        *,
        meter: metrics.Meter | None = None,
    ) -> None:
        self._retrieval = retrieval
        self._generation = generation
        self._model_info: generation_pb.GetModelInfoResponse | None = None
        self._model_info_lock = asyncio.Lock()
        meter = meter or metrics.get_meter("lorag.gateway")
        self._duration = meter.create_histogram(
            "lorag.gateway.ask.duration", unit="s", description="Time from an Ask's receipt to its summary, by outcome."
        )
        self._first_token = meter.create_histogram(
            "lorag.gateway.ask.time_to_first_token",
            unit="s",
            description="Time from an Ask's receipt to its first token.",
        )
        self._dropped = meter.create_counter(
            "lorag.gateway.ask.passages_dropped",
            unit="{passage}",
            description="Retrieved passages left out of prompts to fit the model's context.",
        )

    async def model_info(self) -> generation_pb.GetModelInfoResponse:
        """The generation service's model and limits, asked once and kept (they change only with a restart)."""
        if self._model_info is None:
            async with self._model_info_lock:
                if self._model_info is None:
                    self._model_info = await self._generation.model_info()
        return self._model_info

    async def run(self, ask: AskInput) -> AsyncGenerator[AnswerDelta | AnswerSummary, None]:
        """Answer ``ask``: deltas as they are decoded, then the summary (see the module docstring)."""
        started = time.perf_counter_ns()
        template = resolve_template(ask)
        top_k = ask.retrieval.top_k if ask.retrieval.HasField("top_k") else DEFAULT_TOP_K
        attributes: dict[str, str | int] = {
            "lorag.tenant": ask.tenant,
            "lorag.collection": ask.collection,
            "lorag.top_k": top_k,
            "lorag.adapter": ask.adapter,
            "lorag.template": template.name,
        }
        outcome = "error"
        with tracer.start_as_current_span("ask", attributes=attributes) as span:
            try:
                with renamed_fields(_RETRIEVAL_FIELDS):
                    found = await self._retrieval.retrieve(
                        ask.question, tenant=ask.tenant, collection=ask.collection, options=ask.retrieval
                    )
                retrieved = time.perf_counter_ns()
                passages = passages_of(found.chunks)
                summary = AnswerSummary(
                    answer="",
                    passages=passages,
                    cited=set(),
                    no_context=not passages,
                    retrieve_ns=retrieved - started,
                    retrieval_timing=found.timing,
                    degradations=list(found.degradations),
                )
                span.set_attribute("lorag.passages.retrieved", len(passages))
                if not passages and not ask.answer_without_context:
                    outcome = "no_context"
                    summary.total_ns = time.perf_counter_ns() - started
                    yield summary
                    return

                info = await self.model_info()
                max_new = (
                    ask.sampling.max_new_tokens if ask.sampling.HasField("max_new_tokens") else DEFAULT_MAX_NEW_TOKENS
                )
                fitted = fit_passages(
                    template, ask.question, passages, max_context_tokens=info.max_context_tokens, max_new_tokens=max_new
                )
                if fitted.reduced:
                    summary.degradations.append(
                        context_degradation(fitted, len(passages), info.max_context_tokens, max_new)
                    )
                    self._dropped.add(fitted.dropped, {"lorag.collection": ask.collection})
                summary.passages = fitted.passages
                span.set_attribute("lorag.passages", len(fitted.passages))
                span.set_attribute("lorag.passages.dropped", fitted.dropped)

                async for item in self._generate(ask, template.render(ask.question, fitted.passages), started, summary):
                    yield item
                summary.cited = cited_numbers(summary.answer, len(summary.passages))
                span.set_attribute("lorag.model", summary.model)
                if summary.adapter is not None:
                    resolved = summary.adapter.name + (f"@{summary.adapter.version}" if summary.adapter.version else "")
                    span.set_attribute("lorag.adapter.resolved", resolved)
                span.set_attribute("lorag.prompt_tokens", summary.prompt_tokens)
                span.set_attribute("lorag.completion_tokens", summary.completion_tokens)
                span.set_attribute("lorag.passages.cited", len(summary.cited))
                summary.total_ns = time.perf_counter_ns() - started
                outcome = "answered"
                log.info(
                    "answered",
                    tenant=ask.tenant,
                    collection=ask.collection,
                    passages=len(summary.passages),
                    dropped=fitted.dropped,
                    cited=len(summary.cited),
                    prompt_tokens=summary.prompt_tokens,
                    completion_tokens=summary.completion_tokens,
                    ttft_ms=round(summary.time_to_first_token_ns / 1e6, 1),
                    total_ms=round(summary.total_ns / 1e6, 1),
                )
                yield summary
            except LoragError as error:
                span.set_attribute("lorag.error_code", error.code.name)
                raise
            except (GeneratorExit, asyncio.CancelledError):
                outcome = "cancelled"
                raise
            finally:
                self._duration.record((time.perf_counter_ns() - started) / 1e9, {"outcome": outcome})

    async def _generate(
        self, ask: AskInput, turns: list[ChatTurn], started: int, summary: AnswerSummary
    ) -> AsyncIterator[AnswerDelta]:
        """Stream the answer, forwarding each delta; fill ``summary`` from the generation service's summary."""
        chat = common_pb2.Chat(
            messages=[common_pb2.ChatMessage(role=_ROLES[turn.role], content=turn.content) for turn in turns]
        )
        generate_started = time.perf_counter_ns()
        pieces: list[str] = []
        final: generation_pb.GenerationSummary | None = None
        # Closing this generator early (the caller cancelled AskStream) closes the stream below, which cancels the
        # generation call and frees its decode slot at once.
        stream = self._generation.generate_stream(messages=chat, adapter=ask.adapter, sampling=ask.sampling)
        with renamed_fields(_generation_field):
            async with contextlib.aclosing(stream):
                async for response in stream:
                    if response.HasField("delta"):
                        if not response.delta.text:
                            continue
                        if not summary.time_to_first_token_ns:
                            summary.time_to_first_token_ns = time.perf_counter_ns() - started
                            self._first_token.record(summary.time_to_first_token_ns / 1e9)
                        pieces.append(response.delta.text)
                        yield AnswerDelta(response.delta.text, response.delta.token_count)
                    elif response.HasField("summary"):
                        final = response.summary
        summary.generate_ns = time.perf_counter_ns() - generate_started
        if final is None:
            raise LoragError(
                message="the generation service ended its stream without a summary",
                reason="DEPENDENCY_FAILED",
                metadata={"dependency": "generation"},
                code=grpc.StatusCode.INTERNAL,
            )
        summary.answer = "".join(pieces)
        summary.finish_reason = final.finish_reason
        summary.prompt_tokens = final.usage.prompt_tokens
        summary.completion_tokens = final.usage.completion_tokens
        summary.generation_timing = final.timing
        summary.model = final.model
        summary.adapter = final.adapter if final.HasField("adapter") else None


__all__ = ["AnswerDelta", "AnswerSummary", "AskInput", "AskPipeline", "resolve_template"]
