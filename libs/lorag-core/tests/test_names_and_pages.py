"""The chassis' name rules and page-token codec, which every service's List RPCs and proto edges use."""

from __future__ import annotations

import pytest

from lorag_core import names, pagination
from lorag_core.errors import InvalidArgument

pytestmark = pytest.mark.unit


def test_page_tokens_continue_only_the_listing_that_issued_them() -> None:
    token = pagination.encode_page_token("ListDocuments", "Docs/acme", "doc-42")
    assert pagination.decode_page_token(token, "ListDocuments", "Docs/acme") == "doc-42"
    assert pagination.decode_page_token("", "ListDocuments", "Docs/acme") is None
    offset = pagination.encode_page_token("ListTrainingJobs", "q", 200)
    assert pagination.decode_offset(offset, "ListTrainingJobs", "q") == 200
    assert pagination.decode_offset("", "ListTrainingJobs", "q") == 0
    refused = []
    for bad, kind, scope in (
        (token, "ListTenants", "Docs/acme"),  # another RPC's token
        (token, "ListDocuments", "Docs/globex"),  # another parent's token
        ("not*base64", "ListDocuments", "Docs/acme"),
    ):
        with pytest.raises(InvalidArgument) as caught:
            pagination.decode_page_token(bad, kind, scope)
        refused.append(caught.value)
    with pytest.raises(InvalidArgument) as caught:  # a name where an offset is due
        pagination.decode_offset(pagination.encode_page_token("ListTrainingJobs", "q", "x"), "ListTrainingJobs", "q")
    refused.append(caught.value)
    assert [(e.reason, [v.field for v in e.violations]) for e in refused] == [
        ("INVALID_PAGE_TOKEN", ["page_token"])
    ] * 4


def test_page_sizes() -> None:
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(1000) == 1000
    for bad in (-1, 1001):
        with pytest.raises(InvalidArgument) as refused:
            pagination.page_size(bad, field="page_size")
        assert refused.value.reason == "PAGE_SIZE_OUT_OF_RANGE"


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (names.TENANT, ["acme", "a-b_1", "x" * 64], ["", "a b", "x" * 65, "ä"]),
        (names.COLLECTION, ["Docs", "docs_2024"], ["", "2docs", "do-cs", "x" * 65]),
        (names.METADATA_KEY, ["year", "_private"], ["", "bad-key", "1st"]),
        (names.ADAPTER, ["support", "v1.2_x-y"], ["", "a@b", "x" * 129]),
    ],
)
def test_name_rules(rule: names.NameRule, good: list[str], bad: list[str]) -> None:
    assert all(rule.check(name, "name") == name for name in good)
    for name in bad:
        problem = rule.violation(name, "name")
        assert problem is not None and problem.field == "name"
        with pytest.raises(InvalidArgument) as refused:
            rule.check(name, "name")
        assert refused.value.reason == "INVALID_NAME"


def test_aliases_never_read_as_versions() -> None:
    assert names.check_alias("production") == "production"
    for reserved in ("latest", "LATEST", "3", "v3", "V12", "", "a b"):
        assert names.alias_violation(reserved) is not None, reserved
    assert names.normalize_collection("docs") == "Docs"
