"""Generation service settings, from ``LORAG_GENERATION_*`` environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from lorag_core.config import ServiceSettings
from lorag_models import DEFAULT_CHAT_MODEL


class GenerationSettings(ServiceSettings):
    """How the generation service serves; every field is ``LORAG_GENERATION_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LORAG_GENERATION_", extra="ignore", frozen=True)

    port: int = Field(50055, ge=0, le=65535)
    backend: Literal["transformers", "openai"] = Field(
        "transformers", description="transformers: the model in process; openai: an OpenAI-compatible server (vLLM)."
    )
    model: str = Field(
        DEFAULT_CHAT_MODEL,
        description="Base model: a Hugging Face id or a folder (transformers); the served model name (openai).",
    )
    device: str = Field("auto", description="torch device (cpu, cuda, cuda:1); auto = CUDA when present, else CPU.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' dtype; auto = bfloat16 on a CUDA device that supports it, else float32."
    )
    torch_threads: int | None = Field(None, ge=1, description="CPU threads for torch; torch's default when unset.")
    max_batch_size: int = Field(8, ge=1, description="Requests decoded together at most.")
    max_queue_size: int = Field(64, ge=0, description="Requests waiting for a decode slot before RESOURCE_EXHAUSTED.")
    max_new_tokens_limit: int = Field(1024, ge=1, description="The largest max_new_tokens a request may ask for.")
    max_context_tokens: int | None = Field(
        None, ge=16, description="Prompt + completion tokens at most; default: the model's position limit."
    )
    max_loaded_adapters: int = Field(4, ge=1, description="Adapters resident at once; least recently used evicted.")
    max_lora_rank: int = Field(64, ge=0, description="Largest LoRA rank accepted; 0 = no limit.")
    training_address: str = Field(
        "", description="host:port of the training service (the adapter registry); empty = no registry."
    )
    alias_poll_seconds: float = Field(10.0, gt=0, description="How often followed aliases are checked for a move.")
    openai_base_url: str | None = Field(None, description="Base URL of the OpenAI-compatible server (backend=openai).")
    openai_api_key: str | None = Field(None, description="API key for the OpenAI-compatible server, if it needs one.")
    openai_timeout_seconds: float = Field(60.0, gt=0, description="Per-request timeout towards the server.")

    @model_validator(mode="after")
    def _backend_needs(self) -> GenerationSettings:
        if self.backend == "openai" and not self.openai_base_url:
            raise ValueError("LORAG_GENERATION_OPENAI_BASE_URL must be set when LORAG_GENERATION_BACKEND=openai")
        return self
