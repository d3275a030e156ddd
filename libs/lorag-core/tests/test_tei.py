"""The TEI error mapping and client-setting rules both TEI backends (embedding, retrieval) share."""

from __future__ import annotations

import pytest

from lorag_core.errors import InvalidArgument, ResourceExhausted, Unavailable
from lorag_core.tei import check_tei_client, tei_error

pytestmark = pytest.mark.unit

URL = "http://tei:8080"


def mapped(status: int, body: object, fallback: str | None = None, **kwargs: str):
    return tei_error(status, body, fallback, what="embed", url=URL, subject="TEI", field="texts", **kwargs)


@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (429, "Overloaded", ResourceExhausted),
        (503, "Overloaded", ResourceExhausted),
        (400, "Empty", InvalidArgument),
        (413, "Validation", InvalidArgument),
        (422, "Tokenizer", InvalidArgument),
        (500, "Validation", InvalidArgument),
        (424, "Backend", Unavailable),
        (500, "Backend", Unavailable),
        (401, "Unauthorized", Unavailable),
    ],
)
def test_status_and_error_type_pick_the_lorag_error(status, error_type, kind):
    error = mapped(status, {"error": "trouble", "error_type": error_type})
    assert type(error) is kind
    assert error.metadata == {
        "dependency": "tei",
        "url": URL,
        "http_status": str(status),
        "tei_error_type": error_type.lower(),
    }
    assert "trouble" in error.message


def test_refused_input_names_the_callers_field_and_reason():
    error = tei_error(
        413,
        {"error": "batch too large", "error_type": "Validation"},
        None,
        what="rerank",
        url=URL,
        subject="the TEI reranker",
        field="passages",
        reason="RERANK_INPUT_REFUSED",
    )
    assert isinstance(error, InvalidArgument)
    assert error.message == "passages: the TEI reranker refused the input: batch too large"
    assert error.reason == "RERANK_INPUT_REFUSED"
    assert [(v.field, v.description) for v in error.violations] == [("passages", "batch too large")]
    assert mapped(400, {"error": "empty", "error_type": "Empty"}).reason == "INVALID_ARGUMENT"


def test_messages_fall_back_to_the_callers_text_then_the_status():
    assert mapped(503, None, "Service Unavailable").message == (
        f"TEI at {URL} failed to embed (HTTP 503): Service Unavailable"
    )
    assert mapped(503, ["not", "an", "object"], "").message.endswith("(HTTP 503): HTTP 503")
    no_type = mapped(502, {"error": ""}, "Bad Gateway")
    assert no_type.message.endswith(": Bad Gateway") and "tei_error_type" not in no_type.metadata
    assert mapped(429, {"error": "queue full"}).message == "TEI is overloaded: queue full; retry with backoff"


def test_client_settings_are_checked():
    assert check_tei_client("http://tei:8080//", 1.0, None) == "http://tei:8080"
    assert check_tei_client("https://tei", 0.5, 1) == "https://tei"
    for url, timeout, batch in (("tei:8080", 1.0, None), ("http://tei", 0, None), ("http://tei", 1.0, 0)):
        with pytest.raises(ValueError):
            check_tei_client(url, timeout, batch)
