"""The pieces that read real model files: incremental detokenization with the real SmolLM2 tokenizer, and the
adapter manager reading a real PEFT adapter folder (built by the root conftest from the real base model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lorag_core.errors import FailedPrecondition, NotFound
from lorag_generation.adapters import read_adapter_files
from lorag_generation.backends.transformers.detokenize import IncrementalDetokenizer
from lorag_models import resolve_model

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model().path)


# -- detokenization ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["The capital of France is Paris.", "Grüße aus Köln — 東京タワー 🚀🎉!", "  spaced\n\nlines\t"]
)
def test_incremental_detokenization_is_exact_and_never_splits_characters(tokenizer: Any, text: str) -> None:
    context = tokenizer("Question: ")["input_ids"]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer, context)
    deltas = [detok.add(token) for token in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == tokenizer.decode(ids)
    assert not any("\ufffd" in delta for delta in deltas)
    if "🚀" in text:  # a multi-byte character spans several byte-level tokens: some steps emit nothing
        assert "" in deltas[:-1]


def test_detokenizer_drops_an_incomplete_trailing_character(tokenizer: Any) -> None:
    ids = tokenizer("ok 🚀", add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tokenizer)
    text = "".join(detok.add(token) for token in ids[:-1]) + detok.flush()
    assert text == "ok "


# -- adapter files ----------------------------------------------------------------------------------------------------


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
