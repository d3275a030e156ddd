"""What this node can train: its devices, and whether a job's memory fits on them.

The estimate is deliberately simple and on the safe side, so an impossible job is refused at creation with numbers
a user can act on instead of dying later with OUT_OF_MEMORY:

* base weights: parameters x bytes per weight (4 on CPU in fp32; 2 on GPU in bf16; about 0.55 for QLoRA's NF4);
* LoRA parameters: rank x (in + out) per adapted linear layer, trained in fp32: weights, gradients and AdamW's two
  moments = 16 bytes each;
* activations: batch x seq x hidden x layers x k, with k = 34 bytes per element per layer in 16-bit (Korthikanti et
  al., 2022, without recomputation and with memory-efficient attention), twice that in fp32, where seq is
  min(max_length, the dataset's longest row) since a batch is never padded beyond its longest row;
* logits: batch x seq x vocabulary x 4 bytes x 2 (the fp32 logits and their gradient);
* 10 % and 0.5 GiB of overhead (allocator, CUDA context, tokenizer, data).

It is compared with a GPU's total memory (the smallest assigned, per data-parallel process) or, on CPU, with the
host's physical memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lorag_core.errors import FailedPrecondition

GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    ordinal: int
    name: str
    total_memory: int


@dataclass(frozen=True)
class NodeDevices:
    """The GPUs the scheduler owns (may be none) and the host's memory."""

    gpus: tuple[Gpu, ...]
    host_memory: int

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


def host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def detect(ordinals: list[int]) -> NodeDevices:
    """Describe the given CUDA ordinals (from settings) and the host."""
    gpus: list[Gpu] = []
    if ordinals:
        import torch

        for ordinal in ordinals:
            try:
                props = torch.cuda.get_device_properties(ordinal)
                gpus.append(Gpu(ordinal, props.name, int(props.total_memory)))
            except (RuntimeError, AssertionError, AttributeError):  # an override naming a device torch cannot see
                gpus.append(Gpu(ordinal, "unknown", 0))
    return NodeDevices(tuple(gpus), host_memory())


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def parameters(self) -> int:
        head_dim = self.hidden // max(self.heads, 1)
        kv = self.kv_heads * head_dim
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv
        mlp = 3 * self.hidden * self.intermediate
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * (attention + mlp + 2 * self.hidden) + embeddings

    def lora_parameters(self, rank: int, target_modules: list[str]) -> int:
        head_dim = self.hidden // max(self.heads, 1)
        kv = self.kv_heads * head_dim
        shapes = {
            "q_proj": (self.hidden, self.hidden),
            "k_proj": (self.hidden, kv),
            "v_proj": (self.hidden, kv),
            "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        chosen = [shapes[m] for m in target_modules if m in shapes] if target_modules else list(shapes.values())
        if target_modules and not chosen:  # modules of another architecture: assume square hidden layers
            chosen = [(self.hidden, self.hidden)] * len(target_modules)
        return self.layers * sum(rank * (i + o) for i, o in chosen)


def model_shape(model_path: str) -> ModelShape | None:
    """The shape from a model folder's config.json; None when there is none to read (a remote id)."""
    config_file = Path(model_path) / "config.json"
    if not config_file.exists():
        return None
    config = json.loads(config_file.read_text())
    config = config.get("text_config", config)
    try:
        hidden = int(config["hidden_size"])
        heads = int(config.get("num_attention_heads", 1))
        return ModelShape(
            hidden=hidden,
            layers=int(config["num_hidden_layers"]),
            intermediate=int(config.get("intermediate_size", 4 * hidden)),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads", heads)),
            vocab=int(config.get("vocab_size", 32000)),
            tied=bool(config.get("tie_word_embeddings", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Estimate:
    weights: int
    lora: int
    activations: int
    logits: int
    total: int
    sequence: int

    def describe(self) -> str:
        def gib(n: int) -> str:
            return f"{n / GIB:.2f} GiB"

        return (
            f"estimated peak {gib(self.total)} = weights {gib(self.weights)} + LoRA weights, gradients and "
            f"optimizer state {gib(self.lora)} + activations {gib(self.activations)} + logits {gib(self.logits)}"
            f" + overhead, at a sequence length of {self.sequence}"
        )


def estimate(
    shape: ModelShape, method: str, rank: int, target_modules: list[str], batch_size: int, sequence: int, on_gpu: bool
) -> Estimate:
    """Peak training memory per device (see the module docstring)."""
    weight_bytes = 0.55 if method == "qlora" else (2 if on_gpu else 4)
    weights = int(shape.parameters * weight_bytes)
    lora = shape.lora_parameters(rank, target_modules) * 16
    k = 34 if on_gpu else 68
    activations = batch_size * sequence * shape.hidden * shape.layers * k
    if method == "dora":
        activations = int(activations * 1.25)  # DoRA keeps the weight norm's inputs as well
    logits = batch_size * sequence * shape.vocab * 4 * 2
    subtotal = weights + lora + activations + logits
    total = int(subtotal * 1.1) + GIB // 2
    return Estimate(weights, lora, activations, logits, total, sequence)


def check_fits(estimated: Estimate, devices: NodeDevices, gpu_count: int) -> None:
    """FAILED_PRECONDITION naming the estimate and the memory when the job cannot fit."""
    if gpu_count > 0:
        budget = min(g.total_memory for g in devices.gpus[:gpu_count]) if devices.gpus else 0
        where = f"the GPU's {budget / GIB:.1f} GiB"
        if budget == 0:  # memory unknown (an override naming an invisible device): do not refuse on a guess
            return
    else:
        budget = devices.host_memory
        where = f"the host's {budget / GIB:.1f} GiB of RAM (training on CPU)"
    if estimated.total > budget:
        raise FailedPrecondition(
            message=(
                f"the job does not fit in memory: {estimated.describe()}, which exceeds {where}; lower "
                "hyperparameters.batch_size, max_length or rank (or use gradient_accumulation_steps)"
            ),
            reason="INSUFFICIENT_MEMORY",
            metadata={"estimated_bytes": str(estimated.total), "available_bytes": str(budget)},
        )
