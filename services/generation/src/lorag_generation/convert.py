"""The proto edge: request messages checked and turned into the backend's domain objects.

Everything here is pure (no model, no I/O), so every rule of the contract (roles, sampling ranges, adapter
references, the context limit) is unit-tested without a server. Violations are ``InvalidArgument`` naming the
field as the proto spells it (``sampling.temperature``, ``chat.messages[2].role``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lorag.common.v1 import common_pb2
from lorag.generation.v1 import generation_service_pb2 as pb
from lorag_core.errors import FieldViolation, InvalidArgument
from lorag_core.names import ADAPTER, INVALID_NAME
from lorag_generation.backends.base import GenerationInput, Message, Role, SamplingSettings

#: What may follow "@" in an adapter reference: a registry alias or a decimal version (the registry tells them apart).
SELECTOR = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_STOP_SEQUENCES = 8
DEFAULT_MAX_NEW_TOKENS = 256

_ROLES = {
    common_pb2.ROLE_SYSTEM: Role.SYSTEM,
    common_pb2.ROLE_USER: Role.USER,
    common_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
}


def parse_input(request: pb.GenerateRequest | pb.GenerateStreamRequest) -> GenerationInput:
    """The chat or prompt of a GenerateRequest / GenerateStreamRequest; exactly one must be set and non-empty."""
    which = request.WhichOneof("input")
    if which is None:
        raise InvalidArgument.of("input", "set chat (a conversation) or prompt (raw text)")
    if which == "prompt":
        prompt = request.prompt
        if not prompt:
            raise InvalidArgument.of("prompt", "must not be empty")
        return GenerationInput(prompt=prompt)
    return GenerationInput(messages=parse_chat(request.chat))


def parse_chat(chat: common_pb2.Chat) -> tuple[Message, ...]:
    """Messages in order: at least one; a system message only first; the last one from the user."""
    if not chat.messages:
        raise InvalidArgument.of("chat.messages", "must hold at least one message")
    violations: list[FieldViolation] = []
    messages: list[Message] = []
    for i, message in enumerate(chat.messages):
        role = _ROLES.get(message.role)
        if role is None:
            violations.append(
                FieldViolation(f"chat.messages[{i}].role", "must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT")
            )
            continue
        if role is Role.SYSTEM and i != 0:
            violations.append(FieldViolation(f"chat.messages[{i}].role", "a system message may only come first"))
        messages.append(Message(role, message.content))
    last = chat.messages[-1]
    if not violations and _ROLES.get(last.role) is not Role.USER:
        violations.append(
            FieldViolation(
                f"chat.messages[{len(chat.messages) - 1}].role", "the conversation must end with a user message"
            )
        )
    if violations:
        raise InvalidArgument(
            message="; ".join(f"{v.field}: {v.description}" for v in violations), violations=violations
        )
    return tuple(messages)


def parse_sampling(
    params: common_pb2.SamplingParams, *, max_new_tokens_limit: int, default_temperature: float
) -> SamplingSettings:
    """SamplingParams with every default applied; every out-of-range value is reported at once."""
    violations: list[FieldViolation] = []

    def bad(name: str, description: str) -> None:
        violations.append(FieldViolation(f"sampling.{name}", description))

    temperature = params.temperature if params.HasField("temperature") else default_temperature
    if not math.isfinite(temperature) or not 0.0 <= temperature <= 2.0:
        bad("temperature", f"must be between 0 and 2 (0 = greedy), got {temperature:g}")
    top_p = params.top_p if params.HasField("top_p") else 1.0
    if not math.isfinite(top_p) or not 0.0 < top_p <= 1.0:
        bad("top_p", f"must be in (0, 1], got {top_p:g}")
    top_k = params.top_k if params.HasField("top_k") else 0
    if top_k < 0:
        bad("top_k", f"must be 0 (no cut) or more, got {top_k}")
    max_new_tokens = (
        params.max_new_tokens
        if params.HasField("max_new_tokens")
        else min(DEFAULT_MAX_NEW_TOKENS, max_new_tokens_limit)
    )
    if not 1 <= max_new_tokens <= max_new_tokens_limit:
        bad("max_new_tokens", f"must be between 1 and the service's limit {max_new_tokens_limit}, got {max_new_tokens}")
    stops = tuple(params.stop_sequences)
    if len(stops) > MAX_STOP_SEQUENCES:
        bad("stop_sequences", f"at most {MAX_STOP_SEQUENCES} are allowed, got {len(stops)}")
    for i, stop in enumerate(stops):
        if not stop:
            violations.append(FieldViolation(f"sampling.stop_sequences[{i}]", "must not be empty"))
    repetition_penalty = params.repetition_penalty if params.HasField("repetition_penalty") else 1.0
    if not math.isfinite(repetition_penalty) or repetition_penalty <= 0.0:
        bad("repetition_penalty", f"must be above 0 (1 = no penalty), got {repetition_penalty:g}")
    if violations:
        raise InvalidArgument(
            message="; ".join(f"{v.field}: {v.description}" for v in violations), violations=violations
        )
    return SamplingSettings(
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        max_new_tokens=int(max_new_tokens),
        stop_sequences=stops,
        seed=int(params.seed) if params.HasField("seed") else None,
        repetition_penalty=float(repetition_penalty),
    )


def check_prompt_fits(
    generation_input: GenerationInput, prompt_tokens: int, max_new_tokens: int, max_context: int
) -> None:
    """Prompt tokens plus max_new_tokens must fit the model's context; the error names both numbers."""
    total = prompt_tokens + max_new_tokens
    if total <= max_context:
        return
    field_name = "chat" if generation_input.messages is not None else "prompt"
    raise InvalidArgument.of(
        field_name,
        f"the prompt has {prompt_tokens} tokens; with max_new_tokens {max_new_tokens} that is {total}, over the "
        f"model's limit of {max_context} tokens",
        reason="PROMPT_TOO_LONG",
        prompt_tokens=str(prompt_tokens),
        max_context_tokens=str(max_context),
    )


@dataclass(frozen=True)
class AdapterReference:
    """A parsed adapter reference: ``name``, ``name@alias`` or ``name@version`` (a decimal version)."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def plain(self) -> bool:
        return self.alias is None and self.version is None

    def __str__(self) -> str:
        suffix = self.alias or self.version
        return f"{self.name}@{suffix}" if suffix else self.name


def parse_adapter_reference(text: str, field_name: str = "adapter") -> AdapterReference:
    """Split ``name[@alias|@version]``; a suffix of digits is a version, anything else an alias."""
    name, at, suffix = text.partition("@")
    if not ADAPTER.matches(name):
        raise InvalidArgument.of(
            field_name,
            f"{text[:160]!r} is not an adapter reference: the name must be {ADAPTER.description}",
            reason=INVALID_NAME,
        )
    if not at:
        return AdapterReference(name)
    if not SELECTOR.fullmatch(suffix):
        raise InvalidArgument.of(field_name, f"{text!r}: after '@' give an alias or a decimal version")
    if suffix.isdigit():
        return AdapterReference(name, version=str(int(suffix)))
    return AdapterReference(name, alias=suffix)


def validate_adapter_name(name: str, field_name: str = "name") -> str:
    """A public adapter name (LoadAdapterRequest.name): the shared adapter rule, so never an "@" reference."""
    return ADAPTER.check(name, field_name)
