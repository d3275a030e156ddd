"""Document identity, validation, hashing and preparation (parse → chunk → ids)."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from lorag_core import names
from lorag_core.errors import InvalidArgument
from lorag_gateway.ingest.chunking import Chunker, ChunkingStrategy, load_tokenizer, model_token_limit
from lorag_gateway.ingest.documents import (
    DOCUMENT_NAMESPACE,
    LORAG_NAMESPACE,
    DocumentInput,
    PreparedDocument,
    chunk_id,
    content_sha256,
    derive_document_id,
    prepare_document,
    prepare_documents,
    text_sha256,
    validate_document,
)
from lorag_gateway.ingest.parsing import DOCUMENT_TOO_LARGE, EMPTY_DOCUMENT, UNSUPPORTED_MIME_TYPE

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    tokenizer = load_tokenizer()
    return Chunker(tokenizer, token_limit=model_token_limit(tokenizer=tokenizer))


def doc(**fields: object) -> DocumentInput:
    base: dict[str, object] = {"tenant": "acme", "collection": "handbook", "content": "Some text about glaciers."}
    base.update(fields)
    return DocumentInput(**base)  # type: ignore[arg-type]  # tests pass wrong types on purpose


# ----------------------------------------------------------------------------------------------------------------
# ids


def test_namespaces_are_fixed() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://lorag.dev/") == LORAG_NAMESPACE
    assert uuid.uuid5(LORAG_NAMESPACE, "document") == DOCUMENT_NAMESPACE


def test_chunk_ids_follow_the_documented_scheme() -> None:
    expected = str(uuid.uuid5(LORAG_NAMESPACE, "Handbook/acme/guide.md/3"))
    assert chunk_id("handbook", "acme", "guide.md", 3) == expected
    assert chunk_id("Handbook", "acme", "guide.md", 3) == expected  # Weaviate's stored form of the collection
    assert uuid.UUID(expected).version == 5
    assert chunk_id("handbook", "Acme", "guide.md", 3) != expected  # tenants are case-sensitive
    assert chunk_id("handbook", "acme", "guide.md", 4) != expected
    assert names.normalize_collection("handbook") == "Handbook"


def test_derived_document_ids() -> None:
    by_uri = derive_document_id("s3://bucket/guide.pdf", "text")
    assert by_uri == str(uuid.uuid5(DOCUMENT_NAMESPACE, "s3://bucket/guide.pdf"))
    assert derive_document_id("s3://bucket/guide.pdf", "other text") == by_uri  # same source, same document
    by_text = derive_document_id("", "text")
    assert by_text == str(uuid.uuid5(DOCUMENT_NAMESPACE, text_sha256("text")))
    assert by_text != derive_document_id("", "text 2")


def test_prepared_markdown_document(chunker: Chunker) -> None:
    data = ARCHITECTURE.read_bytes()
    prepared = prepare_document(
        doc(content=data, source_uri="docs/architecture.md", metadata={"kind": "design", "year": 2024}), chunker
    )
    assert isinstance(prepared, PreparedDocument)
    assert prepared.id == derive_document_id("docs/architecture.md", prepared.text)
    assert prepared.title == "Architecture"
    assert prepared.mime_type == "text/markdown"
    assert prepared.metadata == {"kind": "design", "year": 2024}
    assert len(prepared.chunks) >= 3
    assert len({c.id for c in prepared.chunks}) == len(prepared.chunks)
    for index, chunk in enumerate(prepared.chunks):
        assert chunk.index == index
        assert chunk.id == chunk_id("handbook", "acme", prepared.id, index)
        assert prepared.text[chunk.char_start : chunk.char_end] == chunk.text
        assert 0 < chunk.token_count <= 200
    assert prepared.token_count == sum(c.token_count for c in prepared.chunks)
    assert prepared.content_sha256 == content_sha256(
        prepared.text, "Architecture", "docs/architecture.md", {"kind": "design", "year": 2024}
    )
    assert len(prepared.content_sha256) == 64 and prepared.content_sha256 == prepared.content_sha256.lower()
    # deterministic
    again = prepare_document(
        doc(content=data, source_uri="docs/architecture.md", metadata={"year": 2024, "kind": "design"}), chunker
    )
    assert again == prepared


def test_caller_id_and_title_win(chunker: Chunker) -> None:
    prepared = prepare_document(
        doc(content="# Heading\n\nBody text.", mime_type="text/markdown", id="kb/article 7", title="  Chosen  "),
        chunker,
    )
    assert prepared.id == "kb/article 7"
    assert prepared.title == "Chosen"
    assert prepared.chunks[0].id == chunk_id("handbook", "acme", "kb/article 7", 0)


def test_same_text_as_str_or_bytes_is_the_same_document(chunker: Chunker) -> None:
    as_text = prepare_document(doc(content="Line one.\nLine two.\n"), chunker)
    as_bytes = prepare_document(doc(content=b"\xef\xbb\xbfLine one.\r\nLine two.\r\n", mime_type="text/plain"), chunker)
    assert as_text.id == as_bytes.id == derive_document_id("", "Line one.\nLine two.")
    assert as_text.content_sha256 == as_bytes.content_sha256


# ----------------------------------------------------------------------------------------------------------------
# change detection


def test_content_hash_covers_what_is_indexed() -> None:
    base = content_sha256("text", "Title", "a.md", {"tags": ["x", "y"], "year": 2024})
    assert content_sha256("text", "Title", "a.md", {"year": 2024, "tags": ["x", "y"]}) == base  # key order
    changed = [
        content_sha256("text!", "Title", "a.md", {"tags": ["x", "y"], "year": 2024}),
        content_sha256("text", "Title 2", "a.md", {"tags": ["x", "y"], "year": 2024}),
        content_sha256("text", "Title", "b.md", {"tags": ["x", "y"], "year": 2024}),
        content_sha256("text", "Title", "a.md", {"tags": ["y", "x"], "year": 2024}),
        content_sha256("text", "Title", "a.md", {"tags": ["x", "y"], "year": 2025}),
        content_sha256("text", "Title", "a.md", {"tags": ["x", "y"], "year": 2024.0}),  # the type is indexed too
        content_sha256("text", "Title", "a.md", {"tags": ["x", "y"], "year": "2024"}),
        content_sha256("text", "Title", "a.md", {"tags": ["x", "y"]}),
        content_sha256("text", "Title", "a.md", {"tags": ["x", "y"], "year": 2024, "draft": True}),
    ]
    assert len({base, *changed}) == len(changed) + 1
    # no ambiguity between the fields: moving characters from the title into the text changes the hash
    assert content_sha256("ab", "c") != content_sha256("cab", "") != content_sha256("c\nab", "")


def test_timestamps_hash_by_instant() -> None:
    utc = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    plus_two = utc.astimezone(timezone(timedelta(hours=2)))
    naive = datetime(2024, 5, 1, 12, 0)
    assert content_sha256("t", metadata={"at": utc}) == content_sha256("t", metadata={"at": plus_two})
    assert content_sha256("t", metadata={"at": utc}) == content_sha256("t", metadata={"at": naive})


def test_chunking_options_do_not_change_the_hash(chunker: Chunker) -> None:
    document = doc(content=ARCHITECTURE.read_bytes(), mime_type="text/markdown")
    default = prepare_document(document, chunker)
    small = prepare_document(document, chunker.with_options(ChunkingStrategy.TOKEN, 64, 8))
    assert default.content_sha256 == small.content_sha256
    assert default.id == small.id
    assert len(small.chunks) > len(default.chunks)


def test_metadata_change_changes_the_hash_but_not_the_id(chunker: Chunker) -> None:
    one = prepare_document(doc(source_uri="wiki/page", metadata={"owner": "ops"}), chunker)
    two = prepare_document(doc(source_uri="wiki/page", metadata={"owner": "sre"}), chunker)
    assert one.id == two.id
    assert one.content_sha256 != two.content_sha256
    assert [c.id for c in one.chunks] == [c.id for c in two.chunks]


def violations_of(document: DocumentInput) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as excinfo:
        validate_document(document)
    assert excinfo.value.reason == "INVALID_ARGUMENT"
    return {v.field: v.description for v in excinfo.value.violations}


@pytest.mark.parametrize("tenant", ["", "a b", "acme/eu", "x" * 65, "tenant.1", "ünï"])
def test_bad_tenants(tenant: str) -> None:
    assert "document.tenant" in violations_of(doc(tenant=tenant))


@pytest.mark.parametrize("tenant", ["a", "acme-eu_2", "X" * 64, "123"])
def test_good_tenants(tenant: str) -> None:
    validate_document(doc(tenant=tenant))


@pytest.mark.parametrize("collection", ["", "1docs", "my-docs", "_docs", "docs!", "d" * 65, "dócs"])
def test_bad_collections(collection: str) -> None:
    assert "document.collection" in violations_of(doc(collection=collection))


@pytest.mark.parametrize("collection", ["d", "docs", "Docs_2024", "a" + "b" * 63])
def test_good_collections(collection: str) -> None:
    validate_document(doc(collection=collection))


@pytest.mark.parametrize("document_id", ["x" * 257, "line\nbreak", "tab\there", "bell\x07"])
def test_bad_document_ids(document_id: str) -> None:
    assert "document.id" in violations_of(doc(id=document_id))


def test_good_document_ids() -> None:
    for document_id in ["x" * 256, "docs/a b.md", "ünïcödé — ok", "https://example.org/a?b=c"]:
        validate_document(doc(id=document_id))


def test_metadata_validation_reports_every_problem() -> None:
    problems = violations_of(
        doc(
            tenant="bad tenant",
            metadata={
                "1st": "x",
                "has-dash": "x",
                "k" * 64: "x",
                "nan": math.nan,
                "inf": [1.0, math.inf],
                "mixed": ["a", 1],
                "nested": {"a": 1},
                "huge": 2**63,
                "none": None,
                "ok": "fine",
            },
        )
    )
    assert set(problems) == {
        "document.tenant",
        'document.metadata["1st"]',
        'document.metadata["has-dash"]',
        f'document.metadata["{"k" * 64}"]',
        'document.metadata["nan"]',
        'document.metadata["inf"]',
        'document.metadata["mixed"]',
        'document.metadata["nested"]',
        'document.metadata["huge"]',
        'document.metadata["none"]',
    }
    assert "finite" in problems['document.metadata["nan"]']
    assert "[1]" in problems['document.metadata["inf"]']


def test_metadata_values_are_normalised() -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    metadata = validate_document(
        doc(
            metadata={
                "s": "text",
                "i": -(2**63),
                "f": 0.5,
                "b": False,
                "t": naive,
                "tags": ("a", "b"),
                "ints": [1, 2],
                "nums": [1, 2.5],
                "flags": [True, False],
                "empty": [],
                "_private": "ok",
            }
        )
    )
    assert metadata["t"] == naive.replace(tzinfo=UTC)
    assert metadata["tags"] == ["a", "b"]
    assert metadata["ints"] == [1, 2] and all(type(v) is int for v in metadata["ints"])  # type: ignore[union-attr]  # a list here
    assert metadata["nums"] == [1.0, 2.5]
    assert all(type(v) is float for v in metadata["nums"])  # type: ignore[union-attr]  # a list here
    assert metadata["flags"] == [True, False]
    assert metadata["b"] is False


# ----------------------------------------------------------------------------------------------------------------
# errors and batches


def test_parse_errors_propagate(chunker: Chunker) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        prepare_document(doc(content=b"data", mime_type="application/zip"), chunker)
    assert excinfo.value.reason == UNSUPPORTED_MIME_TYPE
    with pytest.raises(InvalidArgument) as excinfo:
        prepare_document(doc(content="x" * 100), chunker, max_bytes=50)
    assert excinfo.value.reason == DOCUMENT_TOO_LARGE
    with pytest.raises(InvalidArgument) as excinfo:
        prepare_document(doc(content="\u0301\u200b"), chunker)  # text, but no tokens
    assert excinfo.value.reason == EMPTY_DOCUMENT
    assert excinfo.value.violations[0].field == "document.text"


def test_validation_comes_before_parsing(chunker: Chunker) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        prepare_document(doc(collection="", content=b"data", mime_type="application/zip"), chunker)
    assert excinfo.value.violations[0].field == "document.collection"


def test_prepare_documents_keeps_order_and_isolates_failures(chunker: Chunker) -> None:
    documents = [
        doc(content=ARCHITECTURE.read_bytes(), mime_type="text/markdown", source_uri="docs/architecture.md"),
        doc(content=b"", mime_type="text/plain"),
        doc(tenant="bad tenant"),
        doc(content="A short note.", id="note-1"),
    ]
    results = prepare_documents(documents, chunker)
    assert isinstance(results[0], PreparedDocument) and results[0] == prepare_document(documents[0], chunker)
    assert isinstance(results[1], InvalidArgument) and results[1].reason == EMPTY_DOCUMENT
    assert isinstance(results[2], InvalidArgument) and results[2].violations[0].field == "document.tenant"
    assert isinstance(results[3], PreparedDocument) and results[3].id == "note-1"
    assert prepare_documents([], chunker) == []
