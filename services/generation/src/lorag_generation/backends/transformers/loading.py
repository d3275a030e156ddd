"""Loading the model: the device and dtype, the weights and tokenizer, and what decoding must know of them.

``choose_device`` and ``choose_dtype`` are pure, so the GPU choices are tested on CPU.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorag_models import ResolvedModel

#: Default temperature when the model's generation config names none (SamplingParams in common.proto).
FALLBACK_TEMPERATURE = 0.7
#: The context length assumed when neither the model's config nor its tokenizer gives a usable one.
FALLBACK_CONTEXT_TOKENS = 2048


def choose_device(requested: str | None, cuda_available: bool) -> str:
    """The torch device to load on: ``auto`` (or empty) picks ``cuda`` when a GPU is present, else ``cpu``."""
    wanted = (requested or "auto").strip().lower()
    if wanted == "auto":
        return "cuda" if cuda_available else "cpu"
    if wanted.startswith("cuda") and not cuda_available:
        raise ValueError(f"device {requested!r} was asked for but CUDA is not available")
    if not (wanted in ("cpu", "cuda", "mps") or wanted.startswith("cuda:")):
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")
    return wanted


def choose_dtype(requested: str | None, device: str, bf16_supported: bool) -> str:
    """The weights' dtype name: ``auto`` is bfloat16 on a CUDA device that supports it (float16 on older GPUs)
    and float32 elsewhere, where half precision is slow or unsupported."""
    wanted = (requested or "auto").strip().lower()
    if wanted == "auto":
        if device.startswith("cuda"):
            return "bfloat16" if bf16_supported else "float16"
        return "float32"
    if wanted not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {requested!r}; use auto, float32, bfloat16 or float16")
    if wanted == "bfloat16" and device.startswith("cuda") and not bf16_supported:
        raise ValueError(f"dtype bfloat16 is not supported on {device}")
    return wanted


@dataclass(frozen=True)
class LoadedModel:
    """A causal LM in eval mode on its device, and the facts about it that decoding and ``ModelInfo`` need."""

    model: Any  # the transformers module: peft injects LoRA layers into it in place, and it stays the one called
    tokenizer: Any  # the decode thread's (detokenization); the event loop renders prompts with its own
    resolved: ResolvedModel
    device: Any  # torch.device
    dtype: str
    eos_token_ids: frozenset[int]
    max_context: int  # prompt + completion tokens at most: the model's limit, or less when configured
    vocab_size: int  # rows of the output embeddings: the size of a repetition penalty's "seen" mask
    default_temperature: float
    has_chat_template: bool
    keeps_last_logits: bool  # forward() takes logits_to_keep, so a prefill computes only the last position's logits
    cache_argument: str  # the name forward() takes the KV cache under


def load_model(
    reference: str | None,
    *,
    device: str | None,
    dtype: str | None,
    torch_threads: int | None,
    max_context_tokens: int | None,
) -> LoadedModel:
    """Load ``reference`` (``lorag_models.resolve_model``; the packaged default when empty) and warm it up, so the
    first request's time to first token is not a cold start. Runs on the thread that will own the model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from lorag_models import resolve_model

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    resolved = resolve_model(reference) if reference else resolve_model()
    cuda = torch.cuda.is_available()
    device_name = choose_device(device, cuda)
    bf16 = cuda and device_name.startswith("cuda") and torch.cuda.is_bf16_supported()
    dtype_name = choose_dtype(dtype, device_name, bf16)
    model: Any = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=getattr(torch, dtype_name))
    model.to(device_name)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    accepts = inspect.signature(model.forward).parameters

    try:
        generation_config = GenerationConfig.from_pretrained(resolved.path)
    except OSError:
        generation_config = model.generation_config

    limit = getattr(model.config, "max_position_embeddings", None) or getattr(tokenizer, "model_max_length", 0)
    if not limit or limit > 10_000_000:
        limit = FALLBACK_CONTEXT_TOKENS
    output_embeddings = model.get_output_embeddings()

    with torch.inference_mode():
        warm = torch.tensor([tokenizer("Hello")["input_ids"] or [0]], device=model.device)
        model(input_ids=warm, use_cache=True)

    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        resolved=resolved,
        device=model.device,
        dtype=dtype_name,
        eos_token_ids=_eos_token_ids(generation_config, tokenizer),
        max_context=int(min(max_context_tokens or limit, limit)),
        vocab_size=int(output_embeddings.weight.shape[0] if output_embeddings is not None else model.config.vocab_size),
        default_temperature=_declared_temperature(generation_config),
        has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        keeps_last_logits="logits_to_keep" in accepts,
        # transformers 5 renamed past_key_values to cache; older model classes still take the old name.
        cache_argument="cache" if "cache" in accepts else "past_key_values",
    )


def _eos_token_ids(generation_config: Any, tokenizer: Any) -> frozenset[int]:
    """Every token that ends a sequence: the generation config's (one or several) and the tokenizer's."""
    eos: set[int] = set()
    for source in (generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            eos.add(source)
        elif source:
            eos.update(int(t) for t in source)
    return frozenset(eos)


def _declared_temperature(generation_config: Any) -> float:
    """The temperature the model's authors set in its generation config, if they set one."""
    declared = generation_config.to_diff_dict() if hasattr(generation_config, "to_diff_dict") else {}
    if declared.get("temperature") is not None:
        return float(declared["temperature"])
    return FALLBACK_TEMPERATURE
