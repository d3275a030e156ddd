"""Issue #5's "done when": ingest documents, ask a question and get a streamed, cited answer; load a LoRA adapter
into the generation service and ask again with it: the answer changes and names the adapter. Then the same
through `lorag ask --json`, as a user runs it.

The whole stack runs on loopback (``lorag_services``), with the real SmolLM2-135M-Instruct and a real PEFT adapter
(``demo_adapter``). Answers are greedy, so each is repeatable.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag.generation.v1 import generation_service_pb2 as generation_pb
from lorag.generation.v1 import generation_service_pb2_grpc as generation_grpc
from lorag_client import GatewayClient, document
from lorag_client.gateway import Answer, AskDelta
from lorag_core.clients import create_channel

pytestmark = pytest.mark.e2e

LORAG = str(Path(sys.executable).parent / "lorag")
COLLECTION = f"E2e{uuid.uuid4().hex[:8]}"
TENANT = "demo"
DOCS = {
    "adapters.md": "# Adapters\n\nA LoRA adapter is a few megabytes of low-rank weights. lorag loads several "
    "adapters into one generation service and picks one per request.",
    "paris.txt": "Paris is the capital of France. The Eiffel Tower was completed in 1889.",
    "tenants.txt": "Each customer of lorag is a tenant; a tenant's documents are never searched for another.",
}
QUESTION = "What is the capital of France?"
GREEDY: dict[str, Any] = {"temperature": 0.0, "max_new_tokens": 32}


@pytest.fixture(scope="module")
async def gateway(lorag_services):
    async with GatewayClient(lorag_services["gateway"], timeout=180) as client:
        async for event in client.ingest(
            [
                document(tenant=TENANT, collection=COLLECTION, id=name, text=text, source_uri=name)
                for name, text in DOCS.items()
            ]
        ):
            if event.HasField("result"):
                assert event.result.outcome == pb.INGEST_OUTCOME_WRITTEN, event.result.reason
        yield client


async def streamed(gateway: GatewayClient, **kwargs) -> tuple[list[AskDelta], Answer]:
    items = [
        item
        async for item in gateway.ask_stream(
            QUESTION, collection=COLLECTION, tenant=TENANT, top_k=3, **GREEDY, **kwargs
        )
    ]
    assert all(isinstance(i, AskDelta) for i in items[:-1]) and isinstance(items[-1], Answer)
    return items[:-1], items[-1]  # type: ignore[return-value]  # the assert above checks each item's type


async def test_a_streamed_cited_answer_then_the_same_question_with_an_adapter(gateway, lorag_services, demo_adapter):
    deltas, base = await streamed(gateway)
    assert len(deltas) >= 2 and "".join(d.text for d in deltas) == base.answer
    assert base.answer.strip() and not base.no_context and base.adapter is None
    assert base.citations[0].document_id == "paris.txt"
    assert {c.document_id for c in base.citations} == set(DOCS)
    for citation in base.citations:
        assert DOCS[citation.document_id][citation.char_start : citation.char_end] == citation.text
    assert base.timing.time_to_first_token_ns > base.timing.retrieve_ns > 0

    name = f"demo-{uuid.uuid4().hex[:6]}"
    async with create_channel(lorag_services["generation"]) as channel:
        generation = generation_grpc.GenerationServiceStub(channel)
        loaded = await generation.LoadAdapter(
            generation_pb.LoadAdapterRequest(name=name, source_uri=str(demo_adapter)), timeout=120
        )
        assert loaded.adapter.state == generation_pb.Adapter.STATE_LOADED
        try:
            _, adapted = await streamed(gateway, adapter=name)
        finally:
            await generation.UnloadAdapter(generation_pb.UnloadAdapterRequest(name=name), timeout=60)

    assert adapted.adapter is not None and adapted.adapter.name == name
    assert adapted.answer != base.answer
    assert [c.chunk_id for c in adapted.citations] == [c.chunk_id for c in base.citations]  # same passages
    assert adapted.model == base.model


async def test_lorag_ask_json(gateway, lorag_services):
    env = {**os.environ, **{f"LORAG_{name.upper()}_ADDRESS": address for name, address in lorag_services.items()}}

    async def lorag(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [LORAG, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    scope = ["--collection", COLLECTION, "--tenant", TENANT]
    done = await lorag(
        "ask", QUESTION, *scope, "--top-k", "2", "--temperature", "0", "--max-new-tokens", "24", "--json"
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    direct = await gateway.ask(
        QUESTION, collection=COLLECTION, tenant=TENANT, top_k=2, temperature=0.0, max_new_tokens=24
    )
    assert data["answer"] == direct.answer and data["answer"].strip()
    assert [c["document_id"] for c in data["citations"]] == [c.document_id for c in direct.citations]
    assert set(data["citations"][0]) == {
        "passage_number",
        "document_id",
        "chunk_id",
        "char_start",
        "char_end",
        "score",
        "title",
        "source_uri",
        "cited_in_answer",
    }
    assert data["citations"][0]["document_id"] == "paris.txt" and data["no_context"] is False
    assert data["finish_reason"] in ("stop", "length") and data["model"] and data["adapter"] is None
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"] > 0
    timings = data["timings"]
    assert timings["gateway_overhead_ms"] == pytest.approx(
        timings["total_ms"] - timings["retrieve_ms"] - timings["generate_ms"], abs=0.01
    )
    assert timings["generation"]["total_ms"] > 0 and timings["retrieval"]["total_ms"] > 0

    table = await lorag(
        "ask", QUESTION, *scope, "--template", "concise", "--temperature", "0", "--max-new-tokens", "16"
    )
    assert table.returncode == 0, table.stderr
    assert "paris.txt" in table.stdout and "first token" in table.stdout

    emptied = f"emptied{uuid.uuid4().hex[:6]}"
    async for _ in gateway.ingest([document(tenant=emptied, collection=COLLECTION, id="x", text="Soon gone.")]):
        pass
    await gateway.delete_documents(COLLECTION, emptied, ["x"])
    empty = await lorag("ask", QUESTION, "--collection", COLLECTION, "--tenant", emptied)
    assert empty.returncode == 0, empty.stderr
    assert f"no passages found in {COLLECTION}/{emptied}" in empty.stdout

    bad = await lorag("ask", QUESTION, *scope, "--template", "sonnet")
    assert bad.returncode == 1 and "template_name" in bad.stderr
