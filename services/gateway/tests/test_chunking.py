"""Token-aware chunking under the packaged all-MiniLM-L6-v2 tokenizer: spans, sizes, boundaries, overlap."""

from __future__ import annotations

import json
import re
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from lorag_core.errors import InvalidArgument
from lorag_gateway.ingest.chunking import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_OVERLAP_TOKENS,
    Chunker,
    ChunkingStrategy,
    TextChunk,
    default_model_dir,
    load_tokenizer,
    model_token_limit,
)
from lorag_gateway.ingest.parsing import parse

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SCIFACT = Path("/work/shared/data/beir/scifact/corpus.jsonl")


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer()


@pytest.fixture(scope="module")
def chunker(tokenizer: Tokenizer) -> Chunker:
    return Chunker(tokenizer, token_limit=model_token_limit(tokenizer=tokenizer))


def doc_tokens(tokenizer: Tokenizer, text: str) -> list[tuple[int, int]]:
    return tokenizer.encode(text, add_special_tokens=False).offsets


def check_chunks(chunker: Chunker, text: str, chunks: list[TextChunk]) -> None:
    """The invariants every chunking must hold."""
    offsets = doc_tokens(chunker.tokenizer, text)
    if not offsets:
        assert chunks == []
        return
    assert chunks, "a text with tokens has chunks"
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.text == chunk.text.strip() or not chunk.text.strip(), "chunks start and end on tokens"
        assert 1 <= chunk.token_count <= chunker.max_tokens
        assert chunk.token_count == chunker.count_tokens(chunk.text), "counts are the model tokenizer's"
    for previous, chunk in pairwise(chunks):
        assert previous.char_start < chunk.char_start, "chunks move forward"
        assert previous.char_end < chunk.char_end, "no chunk is contained in the previous one"
        assert (
            chunk.char_start <= previous.char_end
            or not text[previous.char_end : chunk.char_start].strip()
            or (chunker.count_tokens(text[previous.char_end : chunk.char_start]) == 0)
        ), "nothing between two chunks has tokens"
    # coverage: every token of the text lies inside some chunk
    covered_to = 0
    spans = iter((c.char_start, c.char_end) for c in chunks)
    start, end = next(spans)
    for token_start, token_end in offsets:
        while token_start >= end:
            covered_to = end
            start, end = next(spans)
        assert start <= token_start and token_end <= end, (token_start, token_end, start, end, covered_to)


# ----------------------------------------------------------------------------------------------------------------
# tokenizer and options


def test_load_tokenizer_turns_truncation_off(tokenizer: Tokenizer) -> None:
    # the packaged tokenizer.json truncates at 128 tokens; the chunker must see every token
    raw = json.loads((default_model_dir() / "tokenizer.json").read_text())
    assert raw["truncation"] is not None
    assert len(tokenizer.encode("word " * 1000, add_special_tokens=False).ids) == 1000
    assert tokenizer.encode("hello", add_special_tokens=True).tokens == ["[CLS]", "hello", "[SEP]"]


def test_load_tokenizer_from_file_folder_and_missing(tmp_path: Path) -> None:
    folder = default_model_dir()
    from_file = load_tokenizer(folder / "tokenizer.json")
    from_folder = load_tokenizer(str(folder))
    assert from_file.encode("Chunking works").ids == from_folder.encode("Chunking works").ids
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "nothing.json")


def test_model_token_limit_leaves_room_for_special_tokens(tokenizer: Tokenizer, tmp_path: Path) -> None:
    assert tokenizer.num_special_tokens_to_add(False) == 2  # [CLS] and [SEP]
    assert model_token_limit() == 254  # max_seq_length 256 - 2
    assert DEFAULT_MAX_TOKENS + 2 <= 256
    assert model_token_limit(tmp_path, tokenizer) is None


def test_defaults_follow_the_contract(chunker: Chunker) -> None:
    assert (chunker.max_tokens, chunker.overlap_tokens) == (200, 32) == (DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP_TOKENS)
    assert chunker.strategy is ChunkingStrategy.RECURSIVE
    other = chunker.with_options(ChunkingStrategy.TOKEN, 64, None)
    assert (other.strategy, other.max_tokens, other.overlap_tokens) == (ChunkingStrategy.TOKEN, 64, 32)
    assert other.tokenizer is chunker.tokenizer
    assert chunker.with_options(max_tokens=20).overlap_tokens == 10  # unset overlap is clamped to half
    assert chunker.with_options(max_tokens=254, overlap_tokens=127).max_tokens == 254
    assert chunker.with_options(max_tokens=100, overlap_tokens=0).overlap_tokens == 0


@pytest.mark.parametrize(
    ("max_tokens", "overlap_tokens", "field"),
    [
        (15, None, "chunking.max_tokens"),
        (255, None, "chunking.max_tokens"),
        (-1, None, "chunking.max_tokens"),
        (200, 101, "chunking.overlap_tokens"),
        (200, -1, "chunking.overlap_tokens"),
        (16, 9, "chunking.overlap_tokens"),
    ],
)
def test_options_out_of_range(chunker: Chunker, max_tokens: int, overlap_tokens: int | None, field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        chunker.with_options(max_tokens=max_tokens, overlap_tokens=overlap_tokens)
    assert excinfo.value.violations[0].field == field


# ----------------------------------------------------------------------------------------------------------------
# behaviour on real text


def test_empty_and_tiny_texts(chunker: Chunker) -> None:
    assert chunker.chunk("") == []
    assert chunker.chunk("  \n\n\t ") == []
    assert chunker.chunk("\u200b\u0301") == []  # characters the tokenizer drops
    [only] = chunker.chunk("  Hello, world!  ")
    assert only == TextChunk(0, "Hello, world!", 2, 15, 4)


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
@pytest.mark.parametrize("strategy", list(ChunkingStrategy))
def test_project_docs_chunk_exactly(chunker: Chunker, path: Path, strategy: ChunkingStrategy) -> None:
    text = parse(path.read_bytes(), "text/markdown").text
    c = chunker.with_options(strategy, 96, 16)
    chunks = c.chunk(text)
    check_chunks(c, text, chunks)
    assert len(chunks) >= 2


def sentences(count: int, start: int = 0) -> str:
    words = ["glacier", "retreat", "measured", "across", "the", "alpine", "valleys", "during", "summer", "surveys"]
    return " ".join(
        f"Sentence {start + i} says that the {words[i % 10]} data were {words[(i + 3) % 10]} carefully."
        for i in range(count)
    )


def test_recursive_cuts_at_sentence_ends(chunker: Chunker) -> None:
    text = sentences(60)
    chunks = chunker.chunk(text)
    check_chunks(chunker, text, chunks)
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        assert chunk.text.endswith("carefully."), chunk.text[-40:]
        assert chunk.token_count > chunker.max_tokens // 2


def test_recursive_prefers_paragraphs_and_keeps_headings_with_their_section(chunker: Chunker) -> None:
    # paragraph one is about 130 tokens, so the paragraph break after it and the one after the heading both lie in
    # the last half of the first 200-token window; the cut must come before the heading, not after it
    text = sentences(9) + "\n\nMethods and Materials\n\n" + sentences(20, start=100) + "\n\n" + sentences(8, start=200)
    chunks = chunker.chunk(text)
    check_chunks(chunker, text, chunks)
    first = chunks[0]
    assert first.text == sentences(9)
    assert chunks[1].text.index("Methods and Materials") < 200  # the heading leads (after the overlap) the next
    for chunk in chunks[:-1]:
        assert not chunk.text.endswith("Methods and Materials")


def test_recursive_prefers_line_breaks_over_sentences(chunker: Chunker) -> None:
    items = "\n".join(f"- item {i}: the survey team measured glacier {i}. It shrank." for i in range(40))
    chunks = chunker.chunk(items)
    check_chunks(chunker, items, chunks)
    for chunk in chunks[:-1]:
        assert items[chunk.char_end] == "\n"


def test_no_cut_inside_words(chunker: Chunker) -> None:
    # long words split into many word pieces: a cut between pieces would change the text's tokenization
    text = " ".join(["immunohistochemistry", "phosphatidylinositol", "electroencephalography", "x"] * 60)
    for strategy in ChunkingStrategy:
        c = chunker.with_options(strategy, 50, 10)
        chunks = c.chunk(text)
        check_chunks(c, text, chunks)
        for chunk in chunks:
            assert chunk.char_start == 0 or text[chunk.char_start - 1] == " "
            assert chunk.char_end == len(text) or text[chunk.char_end] == " "


def test_token_strategy_fills_windows(chunker: Chunker) -> None:
    text = sentences(80)
    recursive = chunker.with_options(ChunkingStrategy.RECURSIVE, 64, 8).chunk(text)
    token = chunker.with_options(ChunkingStrategy.TOKEN, 64, 8).chunk(text)
    check_chunks(chunker.with_options(ChunkingStrategy.TOKEN, 64, 8), text, token)
    assert all(c.token_count == 64 for c in token[:-1])  # short words: every window is full
    assert len(token) <= len(recursive)
    assert not all(c.text.endswith(".") for c in token[:-1])


def test_a_word_longer_than_the_window_is_cut_inside(chunker: Chunker) -> None:
    word = "zqxjkvbwpfgh" * 8  # 96 characters, 64 word pieces
    text = f"Before {word} after."
    c = chunker.with_options(ChunkingStrategy.RECURSIVE, 16, 4)
    chunks = c.chunk(text)
    check_chunks(c, text, chunks)
    assert "".join(ch.text for ch in chunks).replace(" ", "").count("zq") >= 8


def test_overlap_repeats_about_overlap_tokens(chunker: Chunker, tokenizer: Tokenizer) -> None:
    text = sentences(100)
    offsets = doc_tokens(tokenizer, text)
    chunks = chunker.chunk(text)
    check_chunks(chunker, text, chunks)
    for previous, chunk in pairwise(chunks):
        shared = sum(1 for s, e in offsets if s >= chunk.char_start and e <= previous.char_end)
        assert abs(shared - chunker.overlap_tokens) <= 8, shared
        assert text[chunk.char_start - 1] == " "  # the overlap starts at a word


def test_no_overlap(chunker: Chunker) -> None:
    text = sentences(40)
    c = chunker.with_options(max_tokens=100, overlap_tokens=0)
    chunks = c.chunk(text)
    check_chunks(c, text, chunks)
    for previous, chunk in pairwise(chunks):
        assert not text[previous.char_end : chunk.char_start].strip()


def test_chunk_many_equals_chunk(chunker: Chunker) -> None:
    texts = [sentences(5), "", sentences(50), "short"]
    assert chunker.chunk_many(texts) == [chunker.chunk(t) for t in texts]
    assert chunker.chunk_many([]) == []


@pytest.mark.skipif(not SCIFACT.is_file(), reason="the SciFact corpus is not available")
def test_scifact_sample(chunker: Chunker) -> None:
    with SCIFACT.open() as f:
        docs = [json.loads(next(f)) for _ in range(200)]
    texts = [f"{d['title']}\n\n{d['text']}" for d in docs]
    for text, chunks in zip(texts, chunker.chunk_many(texts), strict=True):
        check_chunks(chunker, text, chunks)


# ----------------------------------------------------------------------------------------------------------------
# properties

WORDS = st.sampled_from(
    [
        "the",
        "glacier",
        "Retreat",
        "immunohistochemistry",
        "e.g.",
        "3.14",
        "x",
        "naïve",
        "東京",
        "😀",
        "don't",
        "(note)",
        "—",
        "CO2",
        "über",
        "İstanbul",
        "a\u0301",
        "\u200b",
        "zqxjkvbwpfghzqxjkvbwpfgh",
        "ﬁne",
        "x" * 120,
    ]
)
SEPARATORS = st.sampled_from([" ", " ", " ", "  ", ". ", ", ", "; ", "! ", "\n", "\n\n", "\t", "", "-", "/"])
NATURALISH = st.lists(st.tuples(WORDS, SEPARATORS), min_size=0, max_size=300).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=600)


@st.composite
def options(draw: st.DrawFn) -> tuple[ChunkingStrategy, int, int]:
    strategy = draw(st.sampled_from(list(ChunkingStrategy)))
    max_tokens = draw(st.integers(16, 80))
    overlap = draw(st.integers(0, max_tokens // 2))
    return strategy, max_tokens, overlap


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(NATURALISH, ANY_TEXT), opts=options())
def test_property_chunks_are_exact_bounded_and_cover_the_text(
    chunker: Chunker, text: str, opts: tuple[ChunkingStrategy, int, int]
) -> None:
    c = chunker.with_options(*opts)
    chunks = c.chunk(text)
    check_chunks(c, text, chunks)


ENGLISH = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "are",
    "this",
    "be",
    "which",
    "or",
    "an",
    "has",
    "were",
    "have",
    "its",
    "not",
    "but",
    "glacier",
    "glaciers",
    "retreat",
    "mass",
    "balance",
    "measured",
    "measurements",
    "altitude",
    "snow",
    "ice",
    "summer",
    "winter",
    "alpine",
    "valley",
    "survey",
    "surveys",
    "temperature",
    "warming",
    "precipitation",
    "sediment",
    "meltwater",
    "hydrology",
    "catchment",
    "uncertainty",
    "photogrammetry",
    "interferometry",
    "radiometric",
]


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(st.sampled_from(ENGLISH), min_size=50, max_size=400),
    seps=st.lists(st.sampled_from([" ", " ", " ", ". ", ", ", "\n", "\n\n"]), min_size=400, max_size=400),
    opts=options(),
)
def test_property_overlap_is_about_overlap_tokens(
    chunker: Chunker, tokenizer: Tokenizer, words: list[str], seps: list[str], opts: tuple[ChunkingStrategy, int, int]
) -> None:
    text = "".join(w + s for w, s in zip(words, seps, strict=False))
    c = chunker.with_options(*opts)
    chunks = c.chunk(text)
    check_chunks(c, text, chunks)
    offsets = doc_tokens(tokenizer, text)
    slack = max(2, c.overlap_tokens // 4)
    for previous, chunk in pairwise(chunks):
        shared = sum(1 for s, e in offsets if s >= chunk.char_start and e <= previous.char_end)
        if previous.token_count <= c.overlap_tokens:
            assert shared == 0  # a chunk no longer than the overlap is not repeated
        elif previous.token_count <= c.overlap_tokens + slack:
            assert 0 < shared < previous.token_count  # a short chunk (cut before a heading): some overlap
        else:
            assert abs(shared - c.overlap_tokens) <= slack, (shared, c.overlap_tokens)


def test_word_pieces_of_a_chunk_match_the_document(chunker: Chunker, tokenizer: Tokenizer) -> None:
    """Slicing the document's tokens equals re-tokenizing the chunk (what makes one tokenization enough)."""
    text = parse((ROOT / "docs" / "architecture.md").read_bytes(), "text/markdown").text
    encoding = tokenizer.encode(text, add_special_tokens=False)
    for chunk in chunker.chunk(text):
        inside = [
            tok
            for tok, (s, e) in zip(encoding.tokens, encoding.offsets, strict=True)
            if s >= chunk.char_start and e <= chunk.char_end
        ]
        assert inside == tokenizer.encode(chunk.text, add_special_tokens=False).tokens


def test_sentence_end_heuristics(chunker: Chunker) -> None:
    # "e.g. the" is not a sentence end; the cut prefers real sentence ends
    body = " ".join(f"Measures, e.g. the mass of glacier {i}, changed in year {i}. " for i in range(50))
    chunks = chunker.with_options(max_tokens=60, overlap_tokens=0).chunk(body)
    for chunk in chunks[:-1]:
        assert re.search(r"year \d+\.$", chunk.text), chunk.text[-30:]
