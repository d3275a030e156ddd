"""`lorag generate` (the console script, as users run it) against the session's real generation service."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
LORAG = str(Path(sys.executable).parent / "lorag")


def lorag(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LORAG, *args], capture_output=True, text=True, timeout=300, check=False)


async def test_generate_json(generation_service: str) -> None:
    result = await asyncio.to_thread(
        lorag,
        "generate",
        "What is the capital of France?",
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
        "--json",
        "--address",
        generation_service,
    )
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert "Paris" in reply["text"]
    assert reply["finish_reason"] == "stop" and reply["adapter"] is None
    assert reply["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    usage = reply["usage"]
    assert (
        usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["completion_tokens"] > 1
    )
    timings = reply["timings"]
    assert set(timings) == {"queue_ms", "time_to_first_token_ms", "inference_ms", "total_ms"}
    assert 0 < timings["time_to_first_token_ms"] <= timings["total_ms"]


async def test_generate_streams_text_and_reports_errors(generation_service: str) -> None:
    result = await asyncio.to_thread(
        lorag,
        "generate",
        "What is the capital of France?",
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
        "--address",
        generation_service,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    result = await asyncio.to_thread(lorag, "generate", "hi", "--temperature", "3", "--address", generation_service)
    assert result.returncode == 1
    assert "INVALID_ARGUMENT" in result.stderr and "sampling.temperature" in result.stderr
    result = await asyncio.to_thread(lorag, "generate", "hi", "--adapter", "nope", "--address", generation_service)
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr
