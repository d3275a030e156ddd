"""The generation backend interface: what the servicer asks of a model, whichever serves it.

The servicer validates a request (``lorag_generation.convert``), resolves the adapter it names to an
:class:`AdapterHandle`, and calls :meth:`GenerationBackend.stream`, which yields :class:`TextDelta` items and ends
with exactly one :class:`Finished`. ``Generate`` joins the deltas; ``GenerateStream`` forwards them. Both backends
(``transformers`` in process, ``openai`` over HTTP) honour the same :class:`SamplingSettings`, apply stop sequences
the same way (:class:`lorag_generation.stops.StopMatcher`), and report the same usage and timing fields, so a
caller cannot tell them apart except by ``ModelInfo.backend``.

Errors are ``lorag_core.errors`` exceptions: ``InvalidArgument`` (prompt over the context, with the limit named),
``ResourceExhausted`` (queue full), ``Unavailable`` (model loading, remote server down), ``NotFound`` /
``FailedPrecondition`` for adapters. Closing the async iterator early (a client cancelled) must free the request's
slot in the backend at once.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class Role(enum.Enum):
    """Who speaks a chat message; the value is the role name chat templates and OpenAI's API use."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True)
class Message:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class GenerationInput:
    """What the model continues: a chat (rendered with the model's chat template) or a raw prompt, never both."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of messages and prompt must be set")


@dataclass(frozen=True)
class SamplingSettings:
    """Decoding settings with every default applied (``SamplingParams`` in common.proto documents each)."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None
    repetition_penalty: float = 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class FinishReason(enum.Enum):
    """Why generation ended (``FinishReason`` in common.proto)."""

    STOP = "stop"  # end-of-sequence token
    LENGTH = "length"  # max_new_tokens or the context length
    STOP_SEQUENCE = "stop_sequence"
    CANCELLED = "cancelled"  # stopped by the server, e.g. during shutdown


@dataclass(frozen=True)
class AdapterHandle:
    """A resolved adapter a backend applies to one request.

    ``name`` is the name it is resident under in the backend (transformers: the peft adapter name; openai: the
    LoRA module name the server knows). ``version`` and ``alias`` are reported back to the caller as they are.
    """

    name: str
    version: str = ""
    alias: str = ""


@dataclass(frozen=True)
class AdapterFiles:
    """What a PEFT adapter folder declares (adapter_config.json), checked before it is attached to a model."""

    path: str
    base_model: str
    rank: int
    lora_alpha: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class GenerationJob:
    """One request as a backend sees it: validated input, resolved adapter (None = base model), settings."""

    input: GenerationInput
    sampling: SamplingSettings
    adapter: AdapterHandle | None = None
    request_id: str = ""


@dataclass(frozen=True)
class TextDelta:
    """Text decoded since the previous delta: whole characters only, never a held-back stop-sequence prefix."""

    text: str
    token_count: int


@dataclass(frozen=True)
class Finished:
    """The last item of a stream: why it ended and what it cost."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    matched_stop_sequence: str = ""
    queue_ns: int = 0  # waiting for a decode slot
    inference_ns: int = 0  # tokenization + prefill + decode for this request
    time_to_first_token_ns: int = 0  # from the backend receiving the job to the first token being ready


StreamItem = TextDelta | Finished


@dataclass(frozen=True)
class ModelInfo:
    """The base model a backend serves and the limits a caller must respect (``GetModelInfo`` reports these)."""

    model: str
    backend: str  # "transformers" or "openai"
    max_context_tokens: int
    max_new_tokens_limit: int
    has_chat_template: bool
    max_loaded_adapters: int
    max_batch_size: int
    model_revision: str = ""
    device: str = ""
    dtype: str = ""
    max_lora_rank: int = 0
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class GenerationBackend(Protocol):
    """A base model plus resident LoRA adapters, decoding many requests concurrently."""

    async def start(self) -> None:
        """Load the model or connect to the server; the service reports SERVING only after this returns."""

    async def close(self) -> None:
        """Stop decoding (running streams finish with CANCELLED) and release the model or connection."""

    def info(self) -> ModelInfo:
        """The model and limits; valid after :meth:`start`."""

    def count_prompt_tokens(self, generation_input: GenerationInput) -> int:
        """Tokens the input occupies once rendered (chat template applied): used to refuse over-long prompts
        with the limit named before a slot is taken."""

    def stream(self, job: GenerationJob) -> AsyncGenerator[StreamItem, None]:
        """Generate for one job: deltas, then one :class:`Finished`. Closing the iterator cancels the job."""

    async def load_adapter(self, name: str, files: AdapterFiles) -> None:
        """Make the adapter at ``files.path`` resident under ``name`` (replacing what that name held)."""

    async def unload_adapter(self, name: str) -> None:
        """Remove the adapter; jobs already decoding with it finish first."""
