"""Unit tier: the transformers backend's pure parts (device/dtype choice, detokenization, sampling) and the
adapter manager's file and base-model checks, with the real SmolLM2 tokenizer where one is needed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lorag_core.errors import FailedPrecondition, NotFound
from lorag_generation.adapters import base_model_matches, read_adapter_files
from lorag_generation.backends.base import SamplingSettings
from lorag_generation.backends.transformers import IncrementalDetokenizer, choose_device, choose_dtype, sample_token
from lorag_models import DEFAULT_CHAT_MODEL, resolve_model


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model().path)


# -- device and dtype -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "cuda", "expected"),
    [("auto", True, "cuda"), ("auto", False, "cpu"), (None, False, "cpu"), ("cpu", True, "cpu"), ("cuda:1", True, "cuda:1")],
)
def test_device_choice(requested: str | None, cuda: bool, expected: str) -> None:
    assert choose_device(requested, cuda) == expected


@pytest.mark.parametrize("requested", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused(requested: str) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        choose_device(requested, False)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown device"):
        choose_device("tpu", True)


@pytest.mark.parametrize(
    ("requested", "device", "bf16", "expected"),
    [
        ("auto", "cuda", True, "bfloat16"),
        ("auto", "cuda:0", False, "float16"),
        ("auto", "cpu", False, "float32"),
        ("float16", "cuda", False, "float16"),
        ("bfloat16", "cpu", False, "bfloat16"),
        ("float32", "cuda", True, "float32"),
    ],
)
def test_dtype_choice(requested: str, device: str, bf16: bool, expected: str) -> None:
    assert choose_dtype(requested, device, bf16) == expected


def test_bfloat16_on_a_gpu_without_it_is_refused() -> None:
    with pytest.raises(ValueError, match="not supported"):
        choose_dtype("bfloat16", "cuda", False)


# -- detokenization ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["The capital of France is Paris.", "Grüße aus Köln — 東京タワー 🚀🎉!", "  spaced\n\nlines\t"])
def test_incremental_detokenization_is_exact_and_never_splits_characters(tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    context = tokenizer("Question: ")["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, context)
    deltas = [detok.add(token) for token in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == tokenizer.decode(ids)
    assert not any("\ufffd" in delta for delta in deltas)
    if "🚀" in text:  # a multi-byte character spans several byte-level tokens: some steps emit nothing
        assert "" in deltas[:-1]


def test_detokenizer_drops_an_incomplete_trailing_character(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer("ok 🚀", add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    text = "".join(detok.add(token) for token in ids[:-1]) + detok.flush()
    assert text == "ok "


# -- sampling ---------------------------------------------------------------------------------------------------------


def test_greedy_takes_the_argmax() -> None:
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0])
    assert sample_token(logits, SamplingSettings(temperature=0.0), None, None) == 1


def test_repetition_penalty_demotes_seen_tokens() -> None:
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0])
    seen = torch.tensor([False, True, False, False])
    assert sample_token(logits, SamplingSettings(temperature=0.0, repetition_penalty=1.5), seen, None) == 2


def test_top_k_one_is_the_argmax_whatever_the_draw() -> None:
    logits = torch.tensor([0.1, 2.0, 1.9, -1.0])
    settings = SamplingSettings(temperature=1.5, top_k=1)
    draws = {sample_token(logits, settings, None, torch.Generator().manual_seed(s)) for s in range(20)}
    assert draws == {1}


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    settings = SamplingSettings(temperature=1.0, top_p=0.8)
    draws = {sample_token(logits, settings, None, torch.Generator().manual_seed(s)) for s in range(200)}
    assert draws == {0, 1}


def test_a_seed_reproduces_the_draws() -> None:
    logits = torch.zeros(1000)
    settings = SamplingSettings(temperature=1.0)

    def draws(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [sample_token(logits, settings, None, generator) for _ in range(10)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


# -- adapter files and base models ------------------------------------------------------------------------------------


def test_base_model_matching() -> None:
    path = resolve_model().path
    identities = (DEFAULT_CHAT_MODEL, path)
    assert base_model_matches(DEFAULT_CHAT_MODEL, identities)
    assert base_model_matches(path, identities)
    assert base_model_matches("/elsewhere/models/SmolLM2-135M-Instruct", identities)  # the same folder name
    assert not base_model_matches("meta-llama/Llama-3.2-1B", identities)
    assert not base_model_matches("HuggingFaceTB/SmolLM2-360M-Instruct", identities)


def test_adapter_files_are_read_from_the_config(demo_adapter: Path) -> None:
    files = read_adapter_files(demo_adapter)
    assert files.rank == 8 and files.lora_alpha == 16
    assert files.target_modules == ("k_proj", "o_proj", "q_proj", "v_proj")
    assert Path(files.base_model).name == "SmolLM2-135M-Instruct"


def test_a_folder_without_an_adapter_is_not_found(tmp_path: Path, demo_adapter: Path) -> None:
    with pytest.raises(NotFound):
        read_adapter_files(tmp_path / "missing")
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(demo_adapter / "adapter_config.json", config_only)
    with pytest.raises(NotFound, match="no adapter_model"):
        read_adapter_files(config_only)


def test_a_non_lora_adapter_is_refused(tmp_path: Path, demo_adapter: Path) -> None:
    folder = tmp_path / "ia3"
    shutil.copytree(demo_adapter, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["peft_type"] = "IA3"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(FailedPrecondition, match="only LoRA"):
        read_adapter_files(folder)
