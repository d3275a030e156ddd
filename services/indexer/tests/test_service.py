"""Service tier: the real indexer on port 0 against the session's real Weaviate, called over gRPC with the SDK."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag.indexer.v1 import indexer_service_pb2_grpc as pb_grpc
from lorag_client import IndexerClient
from lorag_client.indexer import all_of, any_of, chunk_record, field_filter, metadata_value, python_value
from lorag_core.downstream import status_details
from lorag_core.errors import LoragError
from lorag_indexer.config import IndexerSettings
from lorag_indexer.server import create_app

pytestmark = pytest.mark.service

PREFIX = f"ixsvc{uuid.uuid4().hex[:6]}"  # unique per run: other modules share the session's Weaviate
CORPUS = f"{PREFIX}_corpus"
STORED = CORPUS[0].upper() + CORPUS[1:]


def TS(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def chunk_id(tenant: str, doc: str, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{CORPUS}/{tenant}/{doc}/{index}"))


# doc id → (title, source, metadata, [(text, vector)])
DOCS = {
    "paris": (
        "Capitals",
        "file:///geo/paris.md",
        {"year": 2020, "tags": ["geo", "europe"], "rating": 4.5, "draft": False, "published": TS(2020, 5, 1)},
        [
            ("Paris is the capital of France.", [1.0, 0.0, 0.0, 0.0]),
            ("The Eiffel Tower stands in Paris.", [0.9, 0.1, 0.0, 0.0]),
        ],
    ),
    "lora": (
        "Fine-tuning",
        "file:///ml/lora.md",
        {"year": 2021, "tags": ["ml"], "rating": 3.0, "draft": True, "published": TS(2021, 6, 1)},
        [("LoRA trains low-rank adapters on frozen weights.", [0.0, 1.0, 0.0, 0.0])],
    ),
    "weaviate": (
        "Vector databases",
        "https://weaviate.io/",
        {"year": 2022, "tags": ["ml", "db"], "rating": 5.0, "draft": False, "published": TS(2022, 7, 1)},
        [("Weaviate stores vectors and runs hybrid search.", [0.0, 0.0, 1.0, 0.0])],
    ),
    "bm25": (
        "Search",
        "",
        {"year": 2019, "rating": 2.5, "draft": False, "published": TS(2019, 1, 15)},
        [("BM25 ranks documents by term frequency.", [0.0, 0.0, 0.0, 1.0])],
    ),
}


def records(tenant: str, doc: str) -> list[pb.ChunkRecord]:
    title, source, metadata, chunks = DOCS[doc]
    content = " ".join(text for text, _ in chunks)
    out, offset = [], 0
    for i, (text, vector) in enumerate(chunks):
        out.append(
            chunk_record(
                chunk_id(tenant, doc, i),
                doc,
                text,
                vector,
                chunk_index=i,
                char_start=offset,
                token_count=len(text.split()),
                title=title,
                source_uri=source,
                content_sha256=sha(content),
                metadata=metadata,
            )
        )
        offset += len(text) + 1
    return out


def reasons(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """The ErrorInfo reason ("" when none) and the BadRequest field paths of a failed raw-stub call."""
    reason, _, violations = status_details(error)
    return reason or "", [v.field for v in violations]


async def fails(code: grpc.StatusCode, call: Awaitable[object]) -> tuple[str, list[str]]:
    """Await a call that must fail with ``code``: an SDK call (a LoragError) or a raw stub call (an AioRpcError)."""
    try:
        await call
    except LoragError as error:
        assert error.code == code, error.message
        return error.reason, [v.field for v in error.violations]
    except grpc.aio.AioRpcError as error:
        assert error.code() == code, error.details()
        return reasons(error)
    raise AssertionError(f"the call succeeded; expected {code.name}")


@pytest.fixture(scope="module")
async def service(weaviate):
    settings = IndexerSettings(
        port=0,
        weaviate_host=weaviate.host,
        weaviate_http_port=weaviate.http_port,
        weaviate_grpc_port=weaviate.grpc_port,
        health_interval_seconds=0.5,
    )
    app, store = create_app(settings)
    await app.start()
    await store.start()
    await app.set_serving()
    yield app
    await app.stop(0)
    await store.close()


@pytest.fixture(scope="module")
async def client(service):
    async with IndexerClient(service.address, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
async def corpus(client):
    """Four documents (five chunks) in tenant acme, one in tenant globex."""
    await client.create_collection(CORPUS, 4, embedding_model="toy-4d", metadata_fields={"year": "int"})
    batch = [r for doc in DOCS for r in records("acme", doc)]
    response = await client.upsert_chunks(CORPUS, "acme", batch)
    assert response.upserted_count == 5
    secret = chunk_record(
        chunk_id("globex", "secret", 0), "secret", "Globex secret plans for Paris.", [1.0, 0.0, 0.0, 0.0]
    )
    await client.upsert_chunks(CORPUS, "globex", [secret])
    yield CORPUS
    await client.delete_collection(CORPUS, allow_missing=True)


# -- collections ---------------------------------------------------------------------------------------------------


async def test_health_is_serving_once_weaviate_is_reachable(service):
    async with grpc.aio.insecure_channel(service.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="lorag.indexer.v1.IndexerService")
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_collection_create_get_list_delete(client):
    names = [f"{PREFIX}_c{i}" for i in range(3)]
    created = await client.create_collection(
        names[0],
        8,
        distance="dot",
        ef_construction=64,
        max_connections=16,
        bm25_k1=1.5,
        description="d",
        metadata_fields={"lang": "string", "tags": "string_list"},
    )
    assert created.name == names[0][0].upper() + names[0][1:]
    assert (created.vector_dimensions, created.hnsw.distance_metric) == (8, pb.DISTANCE_METRIC_DOT)
    assert (created.hnsw.ef, created.hnsw.ef_construction, created.hnsw.max_connections) == (-1, 64, 16)
    assert created.bm25.k1 == pytest.approx(1.5) and created.bm25.b == pytest.approx(0.75)
    for name in names[1:]:
        await client.create_collection(name, 4)

    got = await client.get_collection(names[0])
    assert got == created
    assert [(f.name, f.type) for f in got.metadata_fields] == [
        ("lang", pb.METADATA_TYPE_STRING),
        ("tags", pb.METADATA_TYPE_STRING_LIST),
    ]
    defaults = await client.get_collection(names[1])
    assert (defaults.hnsw.distance_metric, defaults.hnsw.ef_construction, defaults.hnsw.max_connections) == (
        pb.DISTANCE_METRIC_COSINE,
        128,
        32,
    )
    # "docs" and "Docs" name one collection.
    reason, _ = await fails(grpc.StatusCode.ALREADY_EXISTS, client.create_collection(created.name, 8))
    assert reason == "COLLECTION_EXISTS"

    # Pages of two, in name order, each of ours exactly once.
    seen, token, pages = [], "", 0
    while True:
        page = await client.list_collections(page_size=2, page_token=token)
        assert len(page.collections) <= 2
        seen += [c.name for c in page.collections]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(seen) and pages >= 2
    ours = [n for n in seen if n.startswith(created.name[:-1])]
    assert ours == [n[0].upper() + n[1:] for n in names]

    await client.delete_collection(names[0])
    reason, _ = await fails(grpc.StatusCode.NOT_FOUND, client.get_collection(names[0]))
    assert reason == "COLLECTION_NOT_FOUND"
    await fails(grpc.StatusCode.NOT_FOUND, client.delete_collection(names[0]))
    await client.delete_collection(names[0], allow_missing=True)
    for name in names[1:]:
        await client.delete_collection(name)


@pytest.mark.parametrize(
    ("collection", "fields"),
    [
        (pb.Collection(name="1bad", vector_dimensions=4), ["collection.name"]),
        (pb.Collection(name="ok", vector_dimensions=0), ["collection.vector_dimensions"]),
        (
            pb.Collection(
                name="ok",
                vector_dimensions=4,
                hnsw=pb.HnswConfig(ef=0, ef_construction=2, max_connections=5000),
                bm25=pb.Bm25Config(k1=0, b=2),
            ),
            [
                "collection.hnsw.ef",
                "collection.hnsw.ef_construction",
                "collection.hnsw.max_connections",
                "collection.bm25.k1",
                "collection.bm25.b",
            ],
        ),
        (
            pb.Collection(
                name="ok",
                vector_dimensions=4,
                metadata_fields=[pb.MetadataField(name="9x", type=pb.METADATA_TYPE_INT), pb.MetadataField(name="y")],
            ),
            ["collection.metadata_fields[0].name", "collection.metadata_fields[1].type"],
        ),
    ],
)
async def test_create_collection_refuses_bad_settings(client, collection, fields):
    request = pb.CreateCollectionRequest(collection=collection)
    _, got = await fails(
        grpc.StatusCode.INVALID_ARGUMENT, pb_grpc.IndexerServiceStub(client.channel).CreateCollection(request)
    )
    assert got == fields


async def test_list_collections_refuses_bad_paging(client):
    _, fields = await fails(grpc.StatusCode.INVALID_ARGUMENT, client.list_collections(page_size=-1))
    assert fields == ["page_size"]
    reason, fields = await fails(grpc.StatusCode.INVALID_ARGUMENT, client.list_collections(page_token="garbage!"))
    assert (reason, fields) == ("INVALID_PAGE_TOKEN", ["page_token"])
    # A token issued by ListTenants is not one ListCollections issued.
    from lorag_indexer.convert import encode_page_token

    reason, _ = await fails(
        grpc.StatusCode.INVALID_ARGUMENT, client.list_collections(page_token=encode_page_token("tenants", "X", "a"))
    )
    assert reason == "INVALID_PAGE_TOKEN"


# -- search ---------------------------------------------------------------------------------------------------------


async def test_vector_search_returns_the_nearest_chunk_with_every_field(client, corpus):
    response = await client.search(corpus, "acme", vector=[1.0, 0.0, 0.0, 0.0], limit=3, include_vectors=True)
    hit = response.hits[0]
    want = records("acme", "paris")[0].chunk
    got = hit.chunk
    assert got.chunk_id == want.chunk_id and got.document_id == "paris"
    assert (got.tenant, got.collection) == ("acme", STORED)
    for field in (
        "text",
        "char_start",
        "char_end",
        "token_count",
        "chunk_index",
        "title",
        "source_uri",
        "content_sha256",
    ):
        assert getattr(got, field) == getattr(want, field), field
    assert {k: python_value(v) for k, v in got.metadata.items()} == DOCS["paris"][2]
    assert got.metadata["year"].WhichOneof("kind") == "int_value"
    assert got.metadata["rating"].WhichOneof("kind") == "double_value"
    assert hit.distance == pytest.approx(0.0, abs=1e-5) and hit.score == pytest.approx(1.0, abs=1e-5)
    assert list(hit.vector) == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert [h.chunk.chunk_index for h in response.hits[:2]] == [0, 1]  # Paris, then the Eiffel Tower
    assert response.timing.total_ns >= response.timing.inference_ns > 0
    close = await client.search(corpus, "acme", vector=[1.0, 0.0, 0.0, 0.0], max_vector_distance=0.05)
    assert [(h.chunk.document_id, h.chunk.chunk_index) for h in close.hits] == [("paris", 0), ("paris", 1)]


async def test_keyword_search_ranks_by_bm25_on_text_and_title(client, corpus):
    response = await client.search(corpus, "acme", text="Eiffel tower", include_score_explanation=True)
    first = response.hits[0]
    assert (first.chunk.document_id, first.chunk.chunk_index) == ("paris", 1)
    assert not first.HasField("distance") and first.score > 0 and first.score_explanation
    assert not first.vector
    # Title words are searchable too, and "title^3" is accepted.
    titled = await client.search(corpus, "acme", text="databases", keyword_properties=["title^3"])
    assert [h.chunk.document_id for h in titled.hits] == ["weaviate"]
    only_text = await client.search(corpus, "acme", text="databases", keyword_properties=["text"])
    assert only_text.hits == []


async def test_hybrid_search_weights_the_two_sides_with_alpha(client, corpus):
    # "adapters" is LoRA's keyword; the vector points at Weaviate's chunk.
    query = {"text": "adapters", "vector": [0.0, 0.0, 1.0, 0.0]}
    keyword_side = await client.search(corpus, "acme", alpha=0.0, **query)
    vector_side = await client.search(corpus, "acme", alpha=1.0, **query)
    assert keyword_side.hits[0].chunk.document_id == "lora"
    assert vector_side.hits[0].chunk.document_id == "weaviate"
    assert vector_side.hits[0].distance == pytest.approx(0.0, abs=1e-5)
    ranked = await client.search(corpus, "acme", fusion="ranked", alpha=0.5, limit=5, **query)
    assert {h.chunk.document_id for h in ranked.hits[:2]} == {"lora", "weaviate"}
    assert all(h.HasField("distance") for h in ranked.hits) and not ranked.hits[0].vector


async def test_limit_and_offset_page_through_the_ranking(client, corpus):
    vector = [0.8, 0.3, 0.2, 0.1]
    everything = await client.search(corpus, "acme", vector=vector, limit=5)
    ranked = [h.chunk.chunk_id for h in everything.hits]
    assert len(ranked) == 5
    first = await client.search(corpus, "acme", vector=vector, limit=2)
    second = await client.search(corpus, "acme", vector=vector, limit=2, offset=2)
    assert [h.chunk.chunk_id for h in [*first.hits, *second.hits]] == ranked[:4]
    assert len((await client.search(corpus, "acme", vector=vector)).hits) == 5  # limit 0 means 10


async def test_tenants_never_see_each_others_chunks(client, corpus):
    globex = await client.search(corpus, "globex", text="Paris", vector=[1.0, 0.0, 0.0, 0.0], limit=50)
    assert [h.chunk.document_id for h in globex.hits] == ["secret"]
    acme = await client.search(corpus, "acme", text="Globex secret", vector=[1.0, 0.0, 0.0, 0.0], limit=50)
    assert "secret" not in {h.chunk.document_id for h in acme.hits}
    reason, _ = await fails(grpc.StatusCode.NOT_FOUND, client.search(corpus, "initech", text="Paris"))
    assert reason == "TENANT_NOT_FOUND"
    tenants = await client.list_tenants(corpus, page_size=1)
    assert [t.name for t in tenants.tenants] == ["acme"] and tenants.tenants[0].activity == pb.TENANT_ACTIVITY_ACTIVE
    rest = await client.list_tenants(corpus, page_size=1, page_token=tenants.next_page_token)
    assert [t.name for t in rest.tenants] == ["globex"] and not rest.next_page_token


def _f(field: str, op: str, value: object) -> common_pb2.Filter:
    return field_filter(field, op, value)


FILTERS = [
    (_f("document_id", "==", "paris"), {"paris"}),
    (_f("document_id", "!=", "paris"), {"lora", "weaviate", "bm25"}),
    (_f("metadata.year", ">=", 2021), {"lora", "weaviate"}),
    (all_of(_f("metadata.year", ">", 2019), _f("metadata.year", "<", 2022)), {"paris", "lora"}),
    (_f("metadata.rating", ">", 4), {"paris", "weaviate"}),  # an int operand on a double field
    (_f("metadata.tags", "contains_any", ["db", "europe"]), {"paris", "weaviate"}),
    (_f("metadata.tags", "contains_all", ["ml", "db"]), {"weaviate"}),
    (_f("metadata.tags", "==", "ml"), {"lora", "weaviate"}),  # a list field equals: it contains
    (_f("metadata.draft", "==", True), {"lora"}),
    (_f("metadata.published", "<", TS(2021, 1, 1)), {"paris", "bm25"}),
    (_f("metadata.tags", "is_null", True), {"bm25"}),
    (_f("title", "like", "Vector*"), {"weaviate"}),
    (_f("title", "==", "Vector databases"), {"weaviate"}),
    (_f("title", "==", "Vector"), set()),  # whole values, not words
    (_f("source_uri", "contains_any", ["https://weaviate.io/", "nowhere"]), {"weaviate"}),
    (_f("content_sha256", "==", sha("LoRA trains low-rank adapters on frozen weights.")), {"lora"}),
    (
        any_of(
            _f("document_id", "==", "lora"), all_of(_f("metadata.rating", ">=", 5.0), _f("metadata.draft", "==", False))
        ),
        {"lora", "weaviate"},
    ),
    (all_of(_f("chunk_index", ">=", 1), _f("token_count", ">", 0)), {"paris"}),
    (common_pb2.Filter(), {"paris", "lora", "weaviate", "bm25"}),  # an empty filter matches everything
]


@pytest.mark.parametrize(("flt", "expected"), FILTERS, ids=[str(i) for i in range(len(FILTERS))])
async def test_filters_restrict_every_mode(client, corpus, flt, expected):
    for mode in ("vector", "hybrid"):
        response = await client.search(
            corpus, "acme", text="the", vector=[0.5, 0.5, 0.5, 0.5], mode=mode, filter=flt, limit=100
        )
        assert {h.chunk.document_id for h in response.hits} == expected, mode


async def test_metadata_keys_select_what_hits_carry(client, corpus):
    response = await client.search(corpus, "acme", vector=[0.0, 1.0, 0.0, 0.0], limit=1, metadata_keys=["year", "nope"])
    assert dict(response.hits[0].chunk.metadata) == {"year": metadata_value(2021)}


BAD_SEARCHES = [
    ({"vector": [1.0, 0.0, 0.0, 0.0], "limit": 1001}, ["limit"]),
    ({"vector": [1.0, 0.0, 0.0, 0.0], "limit": 100, "offset": 9950}, ["offset"]),
    ({"vector": [1.0, 0.0, 0.0]}, ["query_vector"]),
    ({"mode": "keyword"}, ["query_text"]),
    ({"mode": "vector", "text": "x"}, ["query_vector"]),
    ({"mode": "hybrid"}, ["query_text", "query_vector"]),
    ({"text": "x", "alpha": 1.5, "vector": [1.0, 0.0, 0.0, 0.0]}, ["alpha"]),
    ({"text": "x", "keyword_properties": ["body"]}, ["keyword_properties[0]"]),
    ({"text": "x", "filter": _f("metadata.nope", "==", 1)}, ["filter.field.field"]),
    ({"text": "x", "filter": _f("body", "==", "x")}, ["filter.field.field"]),
    ({"text": "x", "filter": _f("metadata.year", "==", "2020")}, ["filter.field.value"]),
    ({"text": "x", "filter": _f("metadata.year", "like", "20*")}, ["filter.field.operator"]),
    ({"text": "x", "filter": _f("metadata.tags", "contains_any", "geo")}, ["filter.field.value"]),
    ({"text": "x", "filter": _f("metadata.draft", ">", True)}, ["filter.field.operator"]),
    (
        {"text": "x", "filter": all_of(_f("document_id", "==", "a"), _f("metadata.year", "==", 1.5))},
        ["filter.composite.filters[1].field.value"],
    ),
    (
        {
            "text": "x",
            "filter": common_pb2.Filter(field=common_pb2.FieldFilter(field="document_id", value=metadata_value("a"))),
        },
        ["filter.field.operator"],
    ),
    (
        {
            "text": "x",
            "filter": common_pb2.Filter(composite=common_pb2.CompositeFilter(operator=common_pb2.LOGICAL_OPERATOR_AND)),
        },
        ["filter.composite.filters"],
    ),
]


@pytest.mark.parametrize(("kwargs", "fields"), BAD_SEARCHES, ids=[str(i) for i in range(len(BAD_SEARCHES))])
async def test_bad_searches_are_invalid_argument_naming_the_field(client, corpus, kwargs, fields):
    _, got = await fails(grpc.StatusCode.INVALID_ARGUMENT, client.search(corpus, "acme", **kwargs))
    assert got == fields


async def test_a_filter_deeper_than_eight_levels_is_refused(client, corpus):
    flt = _f("document_id", "==", "paris")
    for _ in range(8):
        flt = all_of(flt)
    reason, fields = await fails(grpc.StatusCode.INVALID_ARGUMENT, client.search(corpus, "acme", text="x", filter=flt))
    assert reason == "FILTER_TOO_DEEP" and len(fields) == 1


async def test_unknown_collection_is_not_found(client):
    missing = f"{PREFIX}_missing"
    for call in (
        client.search(missing, "acme", text="x"),
        client.upsert_chunks(missing, "acme", [chunk_record(str(uuid.uuid4()), "d", "t", [1.0])]),
        client.delete_documents(missing, "acme", ["d"]),
        client.get_document_states(missing, "acme", ["d"]),
        client.list_tenants(missing),
    ):
        reason, _ = await fails(grpc.StatusCode.NOT_FOUND, call)
        assert reason == "COLLECTION_NOT_FOUND"


# -- writes ----------------------------------------------------------------------------------------------------------


def _record(**chunk_fields: Any) -> pb.ChunkRecord:
    vector = chunk_fields.pop("vector", [1.0, 0.0, 0.0, 0.0])
    record = chunk_record(str(uuid.uuid4()), "doc", "text", vector)
    for key, value in chunk_fields.items():
        if key == "metadata":
            for k, v in value.items():
                record.chunk.metadata[k].CopyFrom(v)
        else:
            setattr(record.chunk, key, value)
    return record


BAD_UPSERTS = [
    ([], "EMPTY_BATCH", ["chunks"]),
    ([_record()] * 1001, "BATCH_TOO_LARGE", ["chunks"]),
    ([_record(chunk_id="not-a-uuid")], "INVALID_CHUNK_ID", ["chunks[0].chunk.chunk_id"]),
    ([_record(), _record(vector=[1.0, 2.0])], "DIMENSION_MISMATCH", ["chunks[1].vector"]),
    ([_record(tenant="globex")], "WRONG_TENANT", ["chunks[0].chunk.tenant"]),
    ([_record(collection="other")], "WRONG_COLLECTION", ["chunks[0].chunk.collection"]),
    ([_record(document_id="")], "INVALID_CHUNK", ["chunks[0].chunk.document_id"]),
    ([_record(metadata={"bad-key": metadata_value(1)})], "INVALID_METADATA_KEY", ["chunks[0].chunk.metadata[bad-key]"]),
    (
        [_record(metadata={"year": metadata_value("2020")})],
        "METADATA_TYPE_CONFLICT",
        ["chunks[0].chunk.metadata[year]"],
    ),
    (
        [_record(metadata={"fresh": metadata_value(1)}), _record(metadata={"fresh": metadata_value("1")})],
        "METADATA_TYPE_CONFLICT",
        ["chunks[1].chunk.metadata[fresh]"],
    ),
    ([_record(metadata={"x": common_pb2.MetadataValue()})], "INVALID_METADATA_VALUE", ["chunks[0].chunk.metadata[x]"]),
    ([_record(content_sha256="ABC")], "INVALID_CHUNK", ["chunks[0].chunk.content_sha256"]),
]


@pytest.mark.parametrize(("batch", "reason", "fields"), BAD_UPSERTS, ids=[r for _, r, _ in BAD_UPSERTS])
async def test_bad_upserts_are_invalid_argument_naming_the_field(client, corpus, batch, reason, fields):
    assert await fails(grpc.StatusCode.INVALID_ARGUMENT, client.upsert_chunks(corpus, "acme", batch)) == (
        reason,
        fields,
    )


async def test_a_bad_tenant_name_is_invalid_argument(client, corpus):
    _, fields = await fails(grpc.StatusCode.INVALID_ARGUMENT, client.upsert_chunks(corpus, "no spaces", [_record()]))
    assert fields == ["tenant"]


async def test_upsert_is_idempotent_and_creates_tenants_on_first_write(client, corpus):
    batch = records("umbrella", "lora")
    for _ in range(2):
        assert (await client.upsert_chunks(corpus, "umbrella", batch)).upserted_count == 1
    states = await client.get_document_states(corpus, "umbrella", ["lora"])
    assert states[0].chunk_count == 1
    await client.delete_tenant(corpus, "umbrella")
    reason, _ = await fails(grpc.StatusCode.NOT_FOUND, client.delete_tenant(corpus, "umbrella"))
    assert reason == "TENANT_NOT_FOUND"
    await client.delete_tenant(corpus, "umbrella", allow_missing=True)


async def test_documents_states_listing_and_deletion(client, corpus):
    tenant = "docs"
    batch = [r for doc in ("paris", "lora", "weaviate", "bm25") for r in records(tenant, doc)]
    await client.upsert_chunks(corpus, tenant, batch)

    states = await client.get_document_states(corpus, tenant, ["paris", "nope", "lora"])
    assert [s.exists for s in states] == [True, False, True]
    paris = states[0]
    assert (paris.chunk_count, paris.title, paris.source_uri) == (2, "Capitals", "file:///geo/paris.md")
    assert paris.content_sha256 == records(tenant, "paris")[0].chunk.content_sha256
    assert states[1] == pb.DocumentState(document_id="nope")
    # A tenant that does not exist holds no documents: not an error.
    absent = await client.get_document_states(corpus, "nobody", ["paris"])
    assert [s.exists for s in absent] == [False]
    await fails(grpc.StatusCode.INVALID_ARGUMENT, client.get_document_states(corpus, tenant, []))
    await fails(grpc.StatusCode.INVALID_ARGUMENT, client.get_document_states(corpus, tenant, ["x"] * 1001))

    listed, token = [], ""
    while True:
        page = await client.list_documents(corpus, tenant, page_size=3, page_token=token)
        listed += [(d.document_id, d.chunk_count) for d in page.documents]
        token = page.next_page_token
        if not token:
            break
    assert listed == [("bm25", 1), ("lora", 1), ("paris", 2), ("weaviate", 1)]
    reason, _ = await fails(grpc.StatusCode.NOT_FOUND, client.list_documents(corpus, "nobody"))
    assert reason == "TENANT_NOT_FOUND"
    reason, _ = await fails(
        grpc.StatusCode.INVALID_ARGUMENT, client.list_documents(corpus, "acme", page_token=page_token_of_docs(corpus))
    )
    assert reason == "INVALID_PAGE_TOKEN"

    deleted = await client.delete_documents(corpus, tenant, ["paris", "lora", "never-indexed"])
    assert (deleted.deleted_document_count, deleted.deleted_chunk_count) == (2, 3)
    remaining = [d.document_id async for d in client.iter_documents(corpus, tenant)]
    assert remaining == ["bm25", "weaviate"]
    reason, _ = await fails(grpc.StatusCode.NOT_FOUND, client.delete_documents(corpus, "nobody", ["x"]))
    assert reason == "TENANT_NOT_FOUND"


def page_token_of_docs(collection: str) -> str:
    from lorag_indexer.convert import encode_page_token

    # A token for another tenant's listing must not continue this one.
    return encode_page_token("documents", f"{collection[0].upper()}{collection[1:]}/docs", "a")


async def test_stale_chunks_are_replaced_without_a_moment_where_the_document_is_missing(client, corpus):
    tenant, doc = "stale", "handbook"

    def version(n_chunks: int, tag: str) -> list[pb.ChunkRecord]:
        digest = sha(tag)
        return [
            chunk_record(
                chunk_id(tenant, doc, i),
                doc,
                f"handbook {tag} part {i}",
                [0.1, 0.2, 0.3, 0.4 + i],
                chunk_index=i,
                content_sha256=digest,
                metadata={"version": tag},
            )
            for i in range(n_chunks)
        ]

    await client.upsert_chunks(corpus, tenant, version(5, "v0"), delete_stale_chunks=True)
    only_doc = field_filter("document_id", "==", doc)
    misses, searches, done = 0, 0, asyncio.Event()

    async def watch() -> None:
        nonlocal misses, searches
        while not done.is_set():
            response = await client.search(corpus, tenant, vector=[0.1, 0.2, 0.3, 0.4], filter=only_doc, limit=10)
            searches += 1
            misses += not response.hits

    watcher = asyncio.create_task(watch())
    stale_counts = []
    for n in range(1, 9):
        size = 3 if n % 2 else 5
        response = await client.upsert_chunks(corpus, tenant, version(size, f"v{n}"), delete_stale_chunks=True)
        stale_counts.append(response.deleted_stale_count)
        assert response.upserted_count == size
    done.set()
    await watcher
    assert searches > 8 and misses == 0
    assert stale_counts == [2, 0, 2, 0, 2, 0, 2, 0]  # 5 → 3 leaves two stale chunks; 3 → 5 overwrites all
    state = (await client.get_document_states(corpus, tenant, [doc]))[0]
    assert (state.chunk_count, state.content_sha256) == (5, sha("v8"))
    hits = (await client.search(corpus, tenant, vector=[0.1, 0.2, 0.3, 0.4], filter=only_doc, limit=10)).hits
    assert {python_value(h.chunk.metadata["version"]) for h in hits} == {"v8"}


async def test_interrupted_replacement_reports_no_agreed_hash(client, corpus):
    tenant = "torn"
    old = records(tenant, "paris")
    await client.upsert_chunks(corpus, tenant, old)
    half = records(tenant, "paris")[:1]
    half[0].chunk.content_sha256 = sha("new version")
    await client.upsert_chunks(corpus, tenant, half)  # a replacement that stopped after its first call
    state = (await client.get_document_states(corpus, tenant, ["paris"]))[0]
    assert (state.exists, state.chunk_count, state.content_sha256) == (True, 2, "")

    # The SDK finishes the job across several calls, deleting stale chunks with the last one.
    def part(i: int, digest: str) -> pb.ChunkRecord:
        return chunk_record(
            chunk_id(tenant, "manual", i),
            "manual",
            f"manual part {i}",
            [0.0, 0.0, 1.0, 0.0],
            chunk_index=i,
            content_sha256=digest,
        )

    await client.upsert_chunks(corpus, tenant, [part(i, sha("old")) for i in range(3)])
    written, deleted = await client.replace_document(
        corpus, tenant, [part(i, sha("new")) for i in range(2)], batch_size=1
    )
    assert (written, deleted) == (2, 1)
    state = (await client.get_document_states(corpus, tenant, ["manual"]))[0]
    assert (state.chunk_count, state.content_sha256) == (2, sha("new"))


async def test_domain_steps_are_child_spans_without_document_text(client, corpus, weaviate):
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]  # the SDK provider
    await client.search(corpus, "acme", text="Eiffel tower", vector=[1.0, 0.0, 0.0, 0.0], limit=3)
    finished = exporter.get_finished_spans()
    search = next(s for s in finished if s.name == "weaviate.search")
    assert search.attributes is not None
    assert (
        dict(search.attributes).items()
        >= {
            "lorag.indexer.collection": STORED,
            "lorag.indexer.tenant": "acme",
            "lorag.indexer.mode": "hybrid",
            "lorag.indexer.limit": 3,
            "lorag.indexer.hits": 3,
        }.items()
    )
    server = next(s for s in finished if s.name.endswith("IndexerService/Search") and s.kind == trace.SpanKind.SERVER)
    assert search.parent is not None and search.parent.span_id == server.context.span_id
    # The call to Weaviate itself is a CLIENT span under the domain step: the indexer -> weaviate edge of a trace.
    call = next(s for s in finished if s.name == "weaviate hybrid")
    assert call.attributes is not None
    assert call.kind == trace.SpanKind.CLIENT
    assert call.parent is not None and call.parent.span_id == search.context.span_id
    assert (
        dict(call.attributes).items()
        >= {
            "peer.service": "weaviate",
            "db.system.name": "weaviate",
            "db.operation.name": "hybrid",
            "db.collection.name": STORED,
            "lorag.tenant": "acme",
            "network.protocol.name": "grpc",
        }.items()
    )
    assert (call.attributes["server.address"], call.attributes["server.port"]) == (weaviate.host, weaviate.grpc_port)
    assert not any("Eiffel" in str(v) for s in finished for v in (s.attributes or {}).values())
