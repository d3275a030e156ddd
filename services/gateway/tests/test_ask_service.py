"""Ask and AskStream on the whole stack on loopback (``lorag_services``): real retrieval on the session's Weaviate,
real generation with SmolLM2-135M-Instruct. Answers are greedy (temperature 0) and short, so they are repeatable
and cheap; what is asserted is behaviour (citations, spans, usage, timings, error codes), not the small model's
wording."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from lorag.common.v1 import common_pb2
from lorag.gateway.v1 import gateway_service_pb2 as pb
from lorag.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from lorag_client import GatewayClient, GenerationClient, LoragError, Unavailable, document, sampling_params
from lorag_gateway.ask.citations import cited_numbers

pytestmark = pytest.mark.e2e

COLLECTION = f"Ask{uuid.uuid4().hex[:8]}"
TENANT = "acme"
TEXTS = {
    "lora": "LoRA fine-tunes a language model by training small low-rank matrices added to its layers, while the "
    "original weights stay frozen. A LoRA adapter is only a few megabytes, so one server can hold many.",
    "paris": "Paris is the capital of France. The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
    "weaviate": "Weaviate is a vector database. lorag keeps one collection per corpus and one tenant per customer.",
}
TITLES = {"lora": "LoRA", "paris": "Paris", "weaviate": "Weaviate"}
QUESTION = "When was the Eiffel Tower completed?"
GREEDY: dict[str, Any] = {"temperature": 0.0, "max_new_tokens": 24}


async def ingest(client: GatewayClient, documents: list[pb.Document]) -> None:
    async for event in client.ingest(documents):
        if event.HasField("result"):
            assert event.result.outcome == pb.INGEST_OUTCOME_WRITTEN, event.result.reason


@pytest.fixture(scope="module")
async def gateway(lorag_services):
    async with GatewayClient(lorag_services["gateway"], timeout=120) as client:
        await ingest(
            client,
            [
                document(
                    tenant=TENANT,
                    collection=COLLECTION,
                    id=doc_id,
                    text=text,
                    title=TITLES[doc_id],
                    source_uri=f"kb/{doc_id}.txt",
                )
                for doc_id, text in TEXTS.items()
            ],
        )
        yield client


def request(**fields) -> pb.AskRequest:
    values = {
        "question": QUESTION,
        "tenant": TENANT,
        "collection": COLLECTION,
        "sampling": sampling_params(**GREEDY),
        **fields,
    }
    return pb.AskRequest(**values)


def stream_request(**fields) -> pb.AskStreamRequest:
    ask = request(**fields)
    return pb.AskStreamRequest.FromString(ask.SerializeToString())  # the two requests share their field numbers


async def stream(gateway: GatewayClient, message: pb.AskStreamRequest) -> tuple[list[str], pb.AskSummary]:
    deltas, summary = [], None
    async for response in gateway.invoke_stream("AskStream", message, timeout=120):
        assert summary is None, "the summary is the last message"
        if response.HasField("delta"):
            deltas.append(response.delta.text)
        else:
            summary = response.summary
    assert summary is not None
    return deltas, summary


async def rpc_error(call) -> tuple[grpc.StatusCode, dict[str, str], str | None]:
    with pytest.raises(LoragError) as caught:
        await call
    return caught.value.code, {v.field: v.description for v in caught.value.violations}, caught.value.reason


async def test_ask_answers_with_citations_of_the_retrieved_passages(gateway):
    response = await gateway.invoke("Ask", request(retrieval=common_pb2.RetrievalOptions(top_k=3)), timeout=120)
    found = await gateway.retrieve(QUESTION, collection=COLLECTION, tenant=TENANT, top_k=3)

    assert response.answer.strip()
    assert not response.no_context and not response.degraded
    assert [c.passage_number for c in response.citations] == [1, 2, 3]
    # the passages given to the model are the retrieval's, in its order, with their ids, spans and scores
    assert [(c.document_id, c.chunk_id, c.char_start, c.char_end) for c in response.citations] == [
        (h.chunk.document_id, h.chunk.chunk_id, h.chunk.char_start, h.chunk.char_end) for h in found.chunks
    ]
    assert response.citations[0].document_id == "paris"
    for citation in response.citations:
        assert TEXTS[citation.document_id][citation.char_start : citation.char_end] == citation.text
        assert (citation.title, citation.source_uri) == (TITLES[citation.document_id], f"kb/{citation.document_id}.txt")
    scores = [c.score for c in response.citations]
    assert scores == sorted(scores, reverse=True)
    cited = cited_numbers(response.answer, 3)
    assert {c.passage_number for c in response.citations if c.cited_in_answer} == cited

    assert response.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)
    usage = response.usage
    assert usage.prompt_tokens > 50 and 0 < usage.completion_tokens <= GREEDY["max_new_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert response.model and not response.HasField("adapter")
    timing = response.timing
    assert timing.retrieve_ns > 0 and timing.generate_ns > 0
    assert 0 < timing.time_to_first_token_ns <= timing.total_ns
    assert timing.total_ns >= timing.retrieve_ns + timing.generate_ns
    assert timing.retrieval.total_ns > 0 and timing.generation.total_ns > 0


async def test_ask_stream_deltas_join_into_the_answer_and_end_with_a_summary(gateway):
    whole = await gateway.invoke("Ask", request(), timeout=120)
    deltas, summary = await stream(gateway, stream_request())

    assert len(deltas) >= 2  # streamed, not sent at once
    assert "".join(deltas) == whole.answer  # greedy decoding: the same answer either way
    assert [c.chunk_id for c in summary.citations] == [c.chunk_id for c in whole.citations]
    assert summary.usage.completion_tokens == whole.usage.completion_tokens > 0
    assert summary.finish_reason == whole.finish_reason
    assert summary.model == whole.model
    timing = summary.timing
    assert timing.total_ns >= timing.retrieve_ns + timing.generate_ns
    assert timing.retrieve_ns < timing.time_to_first_token_ns <= timing.total_ns
    assert timing.generation.time_to_first_token_ns > 0


async def test_sdk_ask_and_ask_stream_return_the_same_answer(gateway):
    answer = await gateway.ask(QUESTION, collection=COLLECTION, tenant=TENANT, top_k=2, **GREEDY)
    items = [
        item async for item in gateway.ask_stream(QUESTION, collection=COLLECTION, tenant=TENANT, top_k=2, **GREEDY)
    ]
    final = items[-1]
    assert answer.answer and final.answer == answer.answer == "".join(i.text for i in items[:-1])
    assert [c.document_id for c in final.citations] == [c.document_id for c in answer.citations]
    assert len(answer.citations) == 2 and answer.citations[0].document_id == "paris"
    assert answer.finish_reason in ("stop", "length") and answer.usage.completion_tokens > 0
    assert (
        answer.timing.gateway_overhead_ns
        == (answer.timing.total_ns - answer.timing.retrieve_ns - answer.timing.generate_ns)
        >= 0
    )


async def test_concise_and_custom_templates_answer(gateway):
    concise = await gateway.invoke("Ask", request(template_name="concise"), timeout=120)
    custom = await gateway.invoke(
        "Ask", request(template_text='Use {{"these": "passages"}}:\n{context}\n\nQ: {question}\nA:'), timeout=120
    )
    assert concise.answer.strip() and custom.answer.strip()
    # the custom template has no system message of ours, so its prompt differs in size from the default's
    default = await gateway.invoke("Ask", request(), timeout=120)
    assert len({default.usage.prompt_tokens, concise.usage.prompt_tokens, custom.usage.prompt_tokens}) == 3


async def test_an_empty_tenant_gets_no_context_and_no_model_call(gateway):
    tenant = f"empty{uuid.uuid4().hex[:6]}"
    await ingest(gateway, [document(tenant=tenant, collection=COLLECTION, id="gone", text="A short-lived note.")])
    await gateway.delete_documents(COLLECTION, tenant, ["gone"])

    response = await gateway.invoke("Ask", request(tenant=tenant), timeout=120)
    assert response.no_context and response.answer == "" and list(response.citations) == []
    assert response.usage == common_pb2.Usage()
    assert response.finish_reason == common_pb2.FINISH_REASON_UNSPECIFIED and response.model == ""
    assert response.timing.generate_ns == 0 and response.timing.time_to_first_token_ns == 0
    assert response.timing.retrieve_ns > 0

    deltas, summary = await stream(gateway, stream_request(tenant=tenant))
    assert deltas == [] and summary.no_context and summary.usage.total_tokens == 0

    # asked to, the model answers from the question alone
    anyway = await gateway.invoke("Ask", request(tenant=tenant, answer_without_context=True), timeout=120)
    assert anyway.no_context and anyway.answer.strip() and anyway.usage.completion_tokens > 0
    assert list(anyway.citations) == []


async def test_passages_beyond_the_models_context_are_left_out_and_reported(gateway, lorag_services):
    async with GenerationClient(lorag_services["generation"]) as generation:
        info = await generation.model_info()
    tenant = f"big{uuid.uuid4().hex[:6]}"
    # Enough ~800-character chunks that top_k of them exceed the context even with a tiny answer budget.
    paragraph = (
        "The tower report {i} notes that painters repaint the Eiffel Tower every seven years with sixty "
        "tonnes of paint, and that lifts carry visitors to three levels above the Champ de Mars. "
    )
    needed = info.max_context_tokens * 3 // 700 + 4
    chunks_per_doc = 10
    docs = [
        document(
            tenant=tenant,
            collection=COLLECTION,
            id=f"report{d}",
            text="\n\n".join(paragraph.format(i=d * chunks_per_doc + i) * 4 for i in range(chunks_per_doc)),
        )
        for d in range(needed // chunks_per_doc + 1)
    ]
    await ingest(gateway, docs)
    top_k = min(100, needed)
    response = await gateway.invoke(
        "Ask",
        request(
            tenant=tenant,
            question="How often is the Eiffel Tower repainted?",
            retrieval=common_pb2.RetrievalOptions(top_k=top_k, rerank=False),
            sampling=sampling_params(temperature=0.0, max_new_tokens=4),
        ),
        timeout=300,
    )
    assert 0 < len(response.citations) < top_k
    assert response.degraded
    assert any(
        d.reason.startswith("context budget:") and d.stage == common_pb2.RETRIEVAL_STAGE_CONTEXT
        for d in response.degradations
    )
    assert response.usage.prompt_tokens + 4 <= info.max_context_tokens  # the prompt really fit
    assert response.usage.completion_tokens > 0


async def test_cancelling_a_stream_mid_answer_then_asking_again_works(gateway):
    # The raw call over the client's channel: the test watches the call's own code after cancelling it.
    call = pb_grpc.GatewayServiceStub(gateway.channel).AskStream(
        stream_request(
            question="Describe Paris and the Eiffel Tower in as much detail as you can.",
            sampling=sampling_params(temperature=0.0, max_new_tokens=200),
        ),
        timeout=120,
    )
    first = await call.read()
    assert first.HasField("delta")
    assert call.cancel()
    assert await call.code() == grpc.StatusCode.CANCELLED

    again = await gateway.invoke("Ask", request(), timeout=120)
    assert again.answer.strip() and again.usage.completion_tokens > 0


@pytest.mark.parametrize("question", ["", "  "])
async def test_an_empty_question_is_invalid(gateway, question: str):
    code, fields, _ = await rpc_error(gateway.invoke("Ask", request(question=question), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and list(fields) == ["question"]
    code, fields, _ = await rpc_error(stream(gateway, stream_request(question=question)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and list(fields) == ["question"]


async def test_an_over_long_question_is_invalid_naming_the_limit(gateway):
    code, fields, _ = await rpc_error(gateway.invoke("Ask", request(question="why " * 1001), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "4000 characters" in fields["question"]


async def test_unknown_or_broken_templates_are_invalid(gateway):
    code, fields, _ = await rpc_error(gateway.invoke("Ask", request(template_name="sonnet"), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == {"template_name": "unknown template 'sonnet'; known: concise, default"}
    code, fields, _ = await rpc_error(gateway.invoke("Ask", request(template_text="Only {question}"), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "{context} missing" in fields["template_text"]


async def test_bad_retrieval_options_come_back_under_the_retrieval_field(gateway):
    code, fields, _ = await rpc_error(
        gateway.invoke("Ask", request(retrieval=common_pb2.RetrievalOptions(top_k=0, alpha=2.0)), timeout=30)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(fields) == {"retrieval.top_k", "retrieval.alpha"}


async def test_an_unknown_collection_is_not_found(gateway):
    code, _, _ = await rpc_error(gateway.invoke("Ask", request(collection=f"Nope{uuid.uuid4().hex[:8]}"), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_bad_sampling_is_invalid_with_the_field_named(gateway):
    code, fields, _ = await rpc_error(
        gateway.invoke("Ask", request(sampling=sampling_params(temperature=3.0)), timeout=30)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sampling.temperature" in fields


async def test_an_unknown_adapter_is_not_found(gateway):
    code, _, _ = await rpc_error(gateway.invoke("Ask", request(adapter=f"nope-{uuid.uuid4().hex[:6]}"), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _, _ = await rpc_error(stream(gateway, stream_request(adapter="nope-either")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_a_generation_service_that_is_down_is_unavailable_naming_it(gateway, lorag_services):
    from lorag_gateway.config import GatewaySettings
    from lorag_gateway.server import Gateway

    unreachable = Gateway(
        GatewaySettings(
            port=0,
            retrieval_address=lorag_services["retrieval"],
            generation_address="127.0.0.1:1",
            embedding_address=lorag_services["embedding"],
            indexer_address=lorag_services["indexer"],
        )
    )
    await unreachable.app.start()
    await unreachable.app.set_serving()
    try:
        async with GatewayClient(unreachable.app.address) as client:
            with pytest.raises(Unavailable) as caught:
                await client.invoke("Ask", request(), timeout=30)
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert caught.value.metadata["dependency"] == "generation"  # what the gateway said was down
    finally:
        await unreachable.app.stop(0)
        await unreachable.close()
