"""What `lorag load` sends: the RPC table against the contracts, and the payloads built without a server."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from lorag.common.v1 import common_pb2
from lorag_cli.load import payloads
from lorag_client import CLIENTS

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.mark.parametrize("service", sorted(payloads.RPCS))
def test_every_rpc_exists_in_the_contract_with_its_streaming_kind(service: str):
    descriptor = payloads.messages(service).DESCRIPTOR.services_by_name[payloads.SERVICE_PACKAGES[service]]
    for name, spec in payloads.RPCS[service].items():
        method = descriptor.methods_by_name[name]
        kind = {
            (False, False): "unary",
            (False, True): "server_stream",
            (True, False): "client_stream",
            (True, True): "bidi_stream",
        }[(method.client_streaming, method.server_streaming)]
        assert spec.kind == kind, name
        assert payloads.full_method(service, name) == method.full_name
    default = payloads.RPCS[service][payloads.DEFAULT_RPC[service]]
    assert not default.mutates  # A default run never writes.


def test_writing_rpcs_are_marked_and_unknown_names_are_refused():
    assert {(s, n) for s, rpcs in payloads.RPCS.items() for n, spec in rpcs.items() if spec.mutates} == {
        ("indexer", "UpsertChunks"),
        ("gateway", "IngestDocuments"),
        ("training", "UploadDataset"),
    }
    assert payloads.rpc_spec("gateway", None).name == "Retrieve"
    with pytest.raises(ValueError, match="Embed, Info"):
        payloads.rpc_spec("embedding", "Search")
    with pytest.raises(ValueError, match="unknown service"):
        payloads.rpc_spec("reranker", None)


def test_sentences_come_from_prose_not_code_tables_or_headings():
    text = (
        "# Title\n\nThe gateway ingests documents. It answers questions with citations!\n\n"
        "```bash\nmake setup   # never a sentence\n```\n| a | table row that is long enough |\n"
        "- A list item that says [something linked](http://x) about adapters.\n"
    )
    assert payloads.sentences_from_markdown(text) == [
        "The gateway ingests documents.",
        "It answers questions with citations!",
        "A list item that says something linked about adapters.",
    ]
    assert len(payloads.load_sentences(DOCS)) > 100  # The repository's own docs make the default corpus.
    assert payloads.load_sentences(None) == list(payloads.FALLBACK_SENTENCES)


def test_texts_are_deterministic_per_seed_and_vary_in_length():
    sentences = payloads.load_sentences(DOCS)
    source, again = payloads.TextSource(sentences, seed=7), payloads.TextSource(sentences, seed=7)
    passages = [source.passage() for _ in range(50)]
    assert passages == [again.passage() for _ in range(50)]
    assert passages != [payloads.TextSource(sentences, seed=8).passage() for _ in range(50)]
    assert len({len(p) for p in passages}) > 20
    queries = [source.query() for _ in range(50)]
    assert all(len(q.split()) >= 3 for q in queries) and len(set(queries)) > 40


async def test_payloads_that_need_no_setup_follow_the_contract_and_the_options():
    options = payloads.LoadOptions(batch=3, max_new_tokens=7, adapter="support@production", corpus=DOCS)
    async with contextlib.AsyncExitStack() as opened:  # Clients never dialled: these need no prepare.

        def build(service: str, rpc: str):
            client = CLIENTS[service]("127.0.0.1:1", retries=False)
            opened.push_async_callback(client.close)
            return payloads.build_workload(service, rpc, client, options, lambda name: "unused")

        embed = await build("embedding", "Embed")
        assert [len(embed.build(i).texts) for i in range(5)] == [3] * 5
        assert embed.build(0) is embed.build(payloads.POOL_SIZE)  # Built ahead, reused.
        generate = (await build("generation", "GenerateStream")).build(4)
        assert (generate.sampling.max_new_tokens, generate.sampling.temperature, generate.adapter) == (
            7,
            0.0,
            "support@production",
        )
        assert generate.chat.messages[0].role == common_pb2.ROLE_USER and generate.chat.messages[0].content
        rerank = (await build("retrieval", "Rerank")).build(0)
        assert len(rerank.passages) == 24 and rerank.query
        ingest = await build("gateway", "IngestDocuments")
        documents = [next(iter(ingest.build(i))).document for i in range(3)]
        assert [d.id for d in documents] == ["load-ingest-0", "load-ingest-1", "load-ingest-2"]
        assert all(d.collection == "docs" and d.tenant == "default" and d.text for d in documents)
        upload = list((await build("training", "UploadDataset")).build(0))
        assert upload[0].metadata.name == "lorag-load-upload" and upload[1].data.count(b"\n") == 16
        jobs = await build("training", "ListTrainingJobs")
        assert jobs.spec.kind == "unary" and jobs.build(0).page_size == 20
