"""End to end: documents in through the gateway, into the real Weaviate, and back out through retrieval.

The whole stack runs on loopback (``lorag_services``: embedding, indexer, retrieval, gateway on port 0) with the
session's real Weaviate and the packaged all-MiniLM-L6-v2.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag_client import GatewayClient, document
from lorag_core.errors import InvalidArgument, NotFound

pytestmark = pytest.mark.e2e

COLLECTION = f"Kp{uuid.uuid4().hex[:8]}"
TENANT = "acme"

LORA_MD = """# Fine-tuning with LoRA

LoRA trains small low-rank adapter matrices while the base model's weights stay frozen.

## Why adapters

An adapter is a few megabytes, so many can be served by one base model and chosen per request.
"""
WEAVIATE_HTML = """<html><head><title>Hybrid search</title><style>p{color:red}</style></head>
<body><nav>menu</nav><h1>Hybrid search</h1>
<p>Weaviate combines BM25 keyword scores with vector similarity in one hybrid query.</p>
<script>var x = 1;</script></body></html>"""
PARIS_TXT = "Paris is the capital of France. The Eiffel Tower was finished in 1889 for the World's Fair."


def docs(tenant: str = TENANT, paris: str = PARIS_TXT) -> list[pb.Document]:
    return [
        document(tenant=tenant, collection=COLLECTION, id="lora.md", data=LORA_MD.encode(), source_uri="lora.md"),
        document(tenant=tenant, collection=COLLECTION, id="hybrid", data=WEAVIATE_HTML.encode(), mime_type="text/html"),
        document(tenant=tenant, collection=COLLECTION, id="paris", text=paris, title="Paris", metadata={"year": 1889}),
    ]


async def ingest(gateway: GatewayClient, documents: list[pb.Document], **kwargs) -> tuple[dict, pb.IngestSummary]:
    results: dict[int, pb.DocumentResult] = {}
    summary = None
    async for event in gateway.ingest(documents, **kwargs):
        if event.HasField("result"):
            results[event.result.index] = event.result
        else:
            summary = event.summary
    assert summary is not None, "the ingest stream ended without its summary"
    return results, summary


@pytest.fixture(scope="module")
async def gateway(lorag_services):
    async with GatewayClient(lorag_services["gateway"]) as client:
        results, summary = await ingest(client, docs())
        assert summary.written_count == 3, [r.reason for r in results.values()]
        yield client


async def test_ingest_reports_each_document_and_a_summary(gateway):
    results, summary = await ingest(gateway, docs(tenant="fresh"))
    assert sorted(r.document_id for r in results.values()) == ["hybrid", "lora.md", "paris"]
    assert {r.outcome for r in results.values()} == {pb.INGEST_OUTCOME_WRITTEN}
    assert all(r.chunk_count >= 1 and len(r.content_sha256) == 64 for r in results.values())
    assert (summary.document_count, summary.written_count, summary.failed_count) == (3, 3, 0)
    assert summary.chunk_count == sum(r.chunk_count for r in results.values())
    assert summary.usage.prompt_tokens > 0


async def test_unchanged_documents_write_nothing(gateway):
    results, summary = await ingest(gateway, docs())
    assert {r.outcome for r in results.values()} == {pb.INGEST_OUTCOME_UNCHANGED}
    assert (summary.unchanged_count, summary.written_count, summary.chunk_count, summary.usage.prompt_tokens) == (
        3,
        0,
        0,
        0,
    )


async def test_retrieval_finds_the_passage_with_its_exact_place_in_the_source(gateway):
    found = await gateway.retrieve("When was the Eiffel Tower finished?", collection=COLLECTION, tenant=TENANT, top_k=3)
    best = found.chunks[0].chunk
    assert best.document_id == "paris"
    assert PARIS_TXT[best.char_start : best.char_end] == best.text
    assert best.title == "Paris"
    assert best.metadata["year"].int_value == 1889
    for mode in ("dense", "keyword", "hybrid"):
        ranked = await gateway.retrieve("hybrid BM25 vector query", collection=COLLECTION, tenant=TENANT, mode=mode)
        assert ranked.chunks[0].chunk.document_id == "hybrid", mode
    html = (await gateway.retrieve("BM25 keyword scores", collection=COLLECTION, tenant=TENANT)).chunks[0].chunk
    assert "var x" not in html.text and "menu" not in html.text and "color:red" not in html.text
    assert html.title == "Hybrid search"


async def test_a_changed_document_replaces_its_chunks(gateway):
    changed = "Paris is the capital of France. Its metro opened in 1900, eleven years after the Eiffel Tower."
    tenant = "changes"
    await ingest(gateway, docs(tenant=tenant))
    results, _ = await ingest(gateway, docs(tenant=tenant, paris=changed))
    outcome = {r.document_id: r.outcome for r in results.values()}
    assert outcome == {
        "paris": pb.INGEST_OUTCOME_WRITTEN,
        "lora.md": pb.INGEST_OUTCOME_UNCHANGED,
        "hybrid": pb.INGEST_OUTCOME_UNCHANGED,
    }
    found = await gateway.retrieve("When did the Paris metro open?", collection=COLLECTION, tenant=tenant, top_k=10)
    paris = [c.chunk.text for c in found.chunks if c.chunk.document_id == "paris"]
    assert paris == [changed]  # the old text is gone, the new one is there


async def test_tenants_never_see_each_other(gateway):
    await ingest(
        gateway, [document(tenant="other", collection=COLLECTION, id="secret", text="The vault code is 4711.")]
    )
    mine = await gateway.retrieve("vault code", collection=COLLECTION, tenant=TENANT, top_k=10, mode="keyword")
    assert "secret" not in {c.chunk.document_id for c in mine.chunks}
    theirs = await gateway.retrieve("vault code", collection=COLLECTION, tenant="other", mode="keyword")
    assert [c.chunk.document_id for c in theirs.chunks] == ["secret"]


async def test_delete_removes_the_document(gateway):
    tenant = "deletes"
    await ingest(gateway, docs(tenant=tenant))
    deleted = await gateway.delete_documents(COLLECTION, tenant, ["paris"])
    assert deleted.deleted_document_count == 1 and deleted.deleted_chunk_count >= 1
    found = await gateway.retrieve("Eiffel Tower", collection=COLLECTION, tenant=tenant, top_k=10)
    assert "paris" not in {c.chunk.document_id for c in found.chunks}


async def test_bad_documents_fail_alone_and_the_stream_goes_on(gateway):
    batch = [
        document(tenant=TENANT, collection=COLLECTION, id="empty", text="   "),
        document(
            tenant=TENANT, collection=COLLECTION, id="binary", data=b"\xff\xfe\x00garbage\xff", mime_type="text/plain"
        ),
        document(tenant=TENANT, collection=COLLECTION, id="image", data=b"GIF89a", mime_type="image/gif"),
        document(tenant=TENANT, collection="not a name!", id="bad-collection", text="hello"),
        document(tenant=TENANT, collection=COLLECTION, id="good", text="A perfectly fine document about gardens."),
    ]
    results, summary = await ingest(gateway, batch)
    by_id = {r.document_id: r for r in results.values()}
    assert by_id["good"].outcome == pb.INGEST_OUTCOME_WRITTEN
    failed = {r.document_id or f"#{r.index}": r for r in results.values() if r.outcome == pb.INGEST_OUTCOME_FAILED}
    assert len(failed) == 4
    assert all(r.error_code == "INVALID_ARGUMENT" and r.reason for r in failed.values())
    assert (summary.failed_count, summary.written_count) == (4, 1)


async def test_delete_and_retrieve_errors_use_documented_codes(gateway):
    with pytest.raises(InvalidArgument):
        await gateway.delete_documents(COLLECTION, TENANT, [])
    with pytest.raises(NotFound) as missing:
        await gateway.retrieve("anything", collection="NoSuchCollection", tenant=TENANT)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND and missing.value.dependency == "gateway"
    with pytest.raises(InvalidArgument) as bad_k:
        await gateway.retrieve("anything", collection=COLLECTION, tenant=TENANT, top_k=0)
    fields = [v.field for v in bad_k.value.violations]
    assert any("top_k" in f for f in fields), fields


async def test_concurrent_ingest_streams_of_one_collection(gateway):
    async def one(tenant: str) -> pb.IngestSummary:
        return (await ingest(gateway, docs(tenant=tenant)))[1]

    summaries = await asyncio.gather(*(one(f"parallel{i}") for i in range(4)))
    assert [s.written_count for s in summaries] == [3, 3, 3, 3]
