"""Base model + adapter construction, with the device, dtype, quantisation and process-group choices kept as pure
functions so they are tested on CPU even where the GPU paths cannot run."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lorag_training.worker.spec import Hyperparameters, WorkerError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a torchrun launch (world_size 1 for a plain `python -m` launch)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes events and checkpoints, logs to MLflow and registers the adapter."""
        return self.rank == 0


def dist_context(env: Mapping[str, str] | None = None) -> DistContext:
    """Read torchrun's WORLD_SIZE / RANK / LOCAL_RANK; absent means a single process."""
    env = os.environ if env is None else env
    try:
        ctx = DistContext(int(env.get("WORLD_SIZE", "1")), int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise WorkerError("INVALID_SPEC", f"bad torchrun environment: {exc}") from exc
    if ctx.world_size < 1 or not 0 <= ctx.rank < ctx.world_size or ctx.local_rank < 0:
        raise WorkerError("INVALID_SPEC", f"bad torchrun environment: {ctx}")
    return ctx


def choose_device(devices: tuple[str, ...] | list[str], ctx: DistContext, cuda_count: int) -> str:
    """The device this process trains on.

    The scheduler restricts CUDA_VISIBLE_DEVICES to the job's devices, so inside the process they are numbered
    from 0: rank r of a torchrun launch uses cuda:<local_rank>. No devices means CPU.
    """
    wants_cuda = any(d.startswith("cuda") for d in devices)
    if not wants_cuda:
        if ctx.distributed:
            raise WorkerError("INVALID_SPEC", "a multi-process (torchrun) job needs one CUDA device per process")
        return "cpu"
    if cuda_count < 1:
        raise WorkerError("DEVICE_UNAVAILABLE", f"the job asks for {list(devices)} but no CUDA device is visible")
    if ctx.local_rank >= cuda_count:
        raise WorkerError(
            "DEVICE_UNAVAILABLE", f"local rank {ctx.local_rank} has no CUDA device ({cuda_count} visible)"
        )
    return f"cuda:{ctx.local_rank}"


def choose_dtype(device: str, bf16_supported: bool) -> torch.dtype:
    """bf16 on a CUDA device that supports it (Ampere+), else fp32 (CPU, or older GPUs where fp16 would need a
    loss scaler)."""
    return torch.bfloat16 if device.startswith("cuda") and bf16_supported else torch.float32


def dist_backend(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def quantization_config(method: str, device: str, compute_dtype: torch.dtype) -> Any:
    """QLoRA's 4-bit NF4 (double-quantised) base; None for LoRA/DoRA. QLoRA needs CUDA and bitsandbytes."""
    if method != "qlora":
        return None
    if not device.startswith("cuda"):
        raise WorkerError("UNSUPPORTED_METHOD", "QLoRA needs a CUDA GPU (4-bit bitsandbytes); use lora or dora on CPU")
    try:
        import bitsandbytes  # noqa: F401 - imported only to learn whether it is installed
    except ImportError as exc:
        raise WorkerError(
            "UNSUPPORTED_METHOD", "QLoRA needs the bitsandbytes package (install lorag-training[gpu])"
        ) from exc
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def lora_config(method: str, hp: Hyperparameters) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=hp.rank,
        lora_alpha=hp.alpha,  # type: ignore[arg-type]  # peft annotates int; alpha / r is computed in float
        lora_dropout=hp.dropout,
        target_modules=list(hp.target_modules) if hp.target_modules else "all-linear",
        use_dora=method == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, method: str, hp: Hyperparameters, device: str, dtype: torch.dtype) -> Any:
    """The base model on `device` with a fresh adapter (seeded by the caller); only the adapter is trainable."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    quant = quantization_config(method, device, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device}
    base = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quant is None:
        base.to(device)  # type: ignore[arg-type]  # transformers' typed wrapper of .to() misses the device form
    else:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    base.config.use_cache = False
    try:
        model = get_peft_model(base, lora_config(method, hp))
    except ValueError as exc:  # e.g. target_modules naming no module of this model
        raise WorkerError("INVALID_SPEC", f"hyperparameters.target_modules: {exc}") from exc
    return model
