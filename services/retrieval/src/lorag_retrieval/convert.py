"""A RetrieveRequest checked and resolved into the settings of one retrieval (every default applied).

The rules, from ``lorag.common.v1.RetrievalOptions`` and ``RetrieveRequest``; each broken rule is one
``BadRequest`` field violation, all reported together in one ``InvalidArgument``:

* ``query``, ``tenant`` and ``collection`` must not be empty (or white space only);
* ``options.mode`` and ``options.fusion`` must be known enum values (unset means hybrid and relative-score);
* ``options.alpha`` and ``options.mmr_lambda``, when set, must be finite and in [0, 1];
* ``options.top_k``, when set, from 1 to 100 (unset: 5);
* ``options.candidate_count``, when set, from top_k to 1,000 (unset: 50, or top_k when larger).

Without reranking and MMR only top_k candidates are fetched, as the contract says. The filter is checked by the
indexer, which knows the collection's fields; its violations come back renamed to ``options.filter...``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lorag.common.v1 import common_pb2
from lorag.retrieval.v1 import retrieval_service_pb2 as pb
from lorag_core.errors import FieldViolation, InvalidArgument

DEFAULT_TOP_K = 5
MAX_TOP_K = 100
DEFAULT_CANDIDATES = 50
MAX_CANDIDATES = 1000
DEFAULT_MMR_LAMBDA = 0.5

_MODES = {
    common_pb2.SEARCH_MODE_UNSPECIFIED: common_pb2.SEARCH_MODE_HYBRID,
    common_pb2.SEARCH_MODE_VECTOR: common_pb2.SEARCH_MODE_VECTOR,
    common_pb2.SEARCH_MODE_KEYWORD: common_pb2.SEARCH_MODE_KEYWORD,
    common_pb2.SEARCH_MODE_HYBRID: common_pb2.SEARCH_MODE_HYBRID,
}
_FUSIONS = {
    common_pb2.FUSION_TYPE_UNSPECIFIED: common_pb2.FUSION_TYPE_RELATIVE_SCORE,
    common_pb2.FUSION_TYPE_RANKED: common_pb2.FUSION_TYPE_RANKED,
    common_pb2.FUSION_TYPE_RELATIVE_SCORE: common_pb2.FUSION_TYPE_RELATIVE_SCORE,
}

#: Short names of the search modes, for span attributes and logs.
MODE_NAMES = {
    common_pb2.SEARCH_MODE_VECTOR: "vector",
    common_pb2.SEARCH_MODE_KEYWORD: "keyword",
    common_pb2.SEARCH_MODE_HYBRID: "hybrid",
}


@dataclass(frozen=True)
class RetrievalPlan:
    """One retrieval, resolved: what to search, how, and which optional stages to run."""

    query: str
    tenant: str
    collection: str
    mode: common_pb2.SearchMode.ValueType  # never UNSPECIFIED
    alpha: float
    fusion: common_pb2.FusionType.ValueType  # never UNSPECIFIED
    filter: common_pb2.Filter | None
    top_k: int
    candidate_count: int
    rerank: bool
    rerank_requested: bool  # the caller set options.rerank = true explicitly
    mmr: bool
    mmr_lambda: float

    @property
    def fetch_count(self) -> int:
        """How many candidates the search fetches: candidate_count when a later stage chooses among them."""
        return self.candidate_count if (self.rerank or self.mmr) else self.top_k

    @property
    def mode_name(self) -> str:
        return MODE_NAMES[self.mode]


def _blank(text: str) -> bool:
    return not text or text.isspace()


def _unit_interval(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def plan_retrieval(
    request: pb.RetrieveRequest, *, default_alpha: float = 0.5, rerank_by_default: bool = True
) -> RetrievalPlan:
    """Check ``request`` and resolve its defaults; raise ``InvalidArgument`` listing every violation."""
    violations: list[FieldViolation] = []
    for name in ("query", "tenant", "collection"):
        if _blank(getattr(request, name)):
            violations.append(FieldViolation(name, "must not be empty or whitespace only"))
    options = request.options

    mode = _MODES.get(options.mode)
    if mode is None:
        violations.append(FieldViolation("options.mode", f"unknown search mode {options.mode}"))
        mode = common_pb2.SEARCH_MODE_HYBRID
    fusion = _FUSIONS.get(options.fusion)
    if fusion is None:
        violations.append(FieldViolation("options.fusion", f"unknown fusion type {options.fusion}"))
        fusion = common_pb2.FUSION_TYPE_RELATIVE_SCORE

    alpha = default_alpha
    if options.HasField("alpha"):
        alpha = options.alpha
        if not _unit_interval(alpha):
            violations.append(FieldViolation("options.alpha", f"must be in [0, 1], got {alpha}"))

    mmr_lambda = DEFAULT_MMR_LAMBDA
    if options.HasField("mmr_lambda"):
        mmr_lambda = options.mmr_lambda
        if not _unit_interval(mmr_lambda):
            violations.append(FieldViolation("options.mmr_lambda", f"must be in [0, 1], got {mmr_lambda}"))

    top_k = DEFAULT_TOP_K
    if options.HasField("top_k"):
        top_k = options.top_k
        if not 1 <= top_k <= MAX_TOP_K:
            violations.append(FieldViolation("options.top_k", f"must be from 1 to {MAX_TOP_K}, got {top_k}"))

    candidates = max(DEFAULT_CANDIDATES, top_k)
    if options.HasField("candidate_count"):
        candidates = options.candidate_count
        if candidates > MAX_CANDIDATES:
            violations.append(
                FieldViolation("options.candidate_count", f"must be at most {MAX_CANDIDATES}, got {candidates}")
            )
        elif candidates < top_k:
            violations.append(
                FieldViolation("options.candidate_count", f"must be at least top_k ({top_k}), got {candidates}")
            )

    if violations:
        first = violations[0]
        more = f" ({len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(message=f"{first.field}: {first.description}{more}", violations=violations)

    rerank_requested = options.HasField("rerank") and options.rerank
    rerank = options.rerank if options.HasField("rerank") else rerank_by_default
    has_filter = options.HasField("filter") and options.filter.WhichOneof("kind") is not None
    return RetrievalPlan(
        query=request.query,
        tenant=request.tenant,
        collection=request.collection,
        mode=mode,
        alpha=float(alpha),
        fusion=fusion,
        filter=options.filter if has_filter else None,
        top_k=top_k,
        candidate_count=candidates,
        rerank=rerank,
        rerank_requested=rerank_requested,
        mmr=options.mmr,
        mmr_lambda=float(mmr_lambda),
    )


__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_MMR_LAMBDA",
    "DEFAULT_TOP_K",
    "MAX_CANDIDATES",
    "MAX_TOP_K",
    "MODE_NAMES",
    "RetrievalPlan",
    "plan_retrieval",
]
