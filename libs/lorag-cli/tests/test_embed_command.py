"""`lorag embed` against a real embedding service on port 0."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lorag_embedding.config import EmbeddingSettings
from lorag_embedding.server import create_app

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
async def embedding_address():
    service, embedder = create_app(EmbeddingSettings(port=0))
    await service.start()
    await embedder.start()
    await service.set_serving()
    yield service.address
    await service.stop(0)
    await embedder.close()


LORAG = str(Path(sys.executable).parent / "lorag")  # the console script, as users run it


def lorag(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LORAG, *args], capture_output=True, text=True, timeout=60, check=False)


async def test_embed_json_has_one_unit_vector_per_text(embedding_address):
    result = await asyncio.to_thread(lorag, "embed", "first text", "second", "--json", "--address", embedding_address)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert [len(e["values"]) for e in reply["embeddings"]] == [384, 384]
    assert reply["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    norm = sum(v * v for v in reply["embeddings"][0]["values"]) ** 0.5
    assert abs(norm - 1) < 1e-4


async def test_embed_error_names_the_code_and_field(embedding_address):
    result = await asyncio.to_thread(lorag, "embed", "ok", " ", "--address", embedding_address)
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "texts[1]" in result.stderr


def test_embed_without_a_service_says_how_to_start_one():
    result = lorag("embed", "x", "--address", "127.0.0.1:1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr and "lorag up" in result.stderr
