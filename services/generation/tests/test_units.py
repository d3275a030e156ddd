"""The transformers backend's pure parts (device and dtype choice, sampling) and the adapter manager's base-model
check. The parts that need the real tokenizer or a real adapter folder are in ``test_model_files.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorag_generation.adapters import base_model_matches
from lorag_generation.backends.base import SamplingSettings
from lorag_generation.backends.transformers.loading import choose_device, choose_dtype
from lorag_generation.backends.transformers.sampling import sample_token
from lorag_models import DEFAULT_CHAT_MODEL

pytestmark = pytest.mark.unit


# -- device and dtype -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "cuda", "expected"),
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        (None, False, "cpu"),
        ("cpu", True, "cpu"),
        ("cuda:1", True, "cuda:1"),
    ],
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


# -- base models ------------------------------------------------------------------------------------


def test_base_model_matching(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "SmolLM2-135M-Instruct"  # where the served model's files are
    folder.mkdir(parents=True)
    path = str(folder)
    identities = (DEFAULT_CHAT_MODEL, path)
    assert base_model_matches(DEFAULT_CHAT_MODEL, identities)
    assert base_model_matches(path, identities)
    assert base_model_matches("/elsewhere/models/SmolLM2-135M-Instruct", identities)  # the same folder name
    assert not base_model_matches("meta-llama/Llama-3.2-1B", identities)
    assert not base_model_matches("HuggingFaceTB/SmolLM2-360M-Instruct", identities)
