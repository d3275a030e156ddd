"""Plain-text helpers for the rerankers that need no model of their own: words, sentences, BM25.

Tokenization follows Weaviate's default for BM25 (``word``: lower-case runs of letters and digits) with the same
English stop-word idea, so a keyword score here agrees in spirit with the index's own.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# A sentence ends at . ! or ? followed by white space and a capital, a digit or an opening bracket; this keeps
# decimals ("1.8 microm") and most abbreviations inside their sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")

# A short English stop-word list (Weaviate's "en" preset is of this kind): words that carry no topic.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "may",
        "might",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "such",
        "than",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "too",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def words(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` without stop words."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def sentences(text: str) -> list[str]:
    """``text`` split into sentences: at line breaks (a title on its own line is a sentence), then at sentence
    ends; white space trimmed, empty pieces dropped."""
    result: list[str] = []
    for line in text.splitlines():
        result.extend(part.strip() for part in _SENTENCE_END.split(line.strip()) if part.strip())
    return result


def bm25(
    query: str,
    passages: Sequence[str],
    *,
    k1: float = 1.2,
    b: float = 0.75,
) -> list[float]:
    """Okapi BM25 of ``query`` against each passage, with document frequencies taken from ``passages`` themselves.

    This is the lexical signal of a reranker that sees only the candidates: term frequencies and lengths are exact,
    and the IDF says how rare a query word is *among the candidates*, which is what separates them. The IDF is
    Lucene's (always positive): ``log(1 + (N - df + 0.5) / (df + 0.5))``.
    """
    query_terms = list(dict.fromkeys(words(query)))
    docs = [Counter(words(p)) for p in passages]
    if not docs or not query_terms:
        return [0.0] * len(docs)
    lengths = [sum(doc.values()) for doc in docs]
    average = (sum(lengths) / len(lengths)) or 1.0
    n = len(docs)
    idf = {}
    for term in query_terms:
        df = sum(1 for doc in docs if term in doc)
        idf[term] = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
    scores = []
    for doc, length in zip(docs, lengths, strict=True):
        score = 0.0
        norm = k1 * (1.0 - b + b * length / average)
        for term in query_terms:
            tf = doc.get(term, 0)
            if tf:
                score += idf[term] * tf * (k1 + 1.0) / (tf + norm)
        scores.append(score)
    return scores


__all__ = ["STOPWORDS", "bm25", "sentences", "words"]
