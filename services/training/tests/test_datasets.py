"""Dataset validation, token statistics and content addressing, on the real SmolLM2 tokenizer."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from lorag_models import resolve_model
from lorag_training.datasets.statistics import load_tokenizer, summarise, token_lengths
from lorag_training.datasets.store import analyse
from lorag_training.datasets.validation import validate

pytestmark = pytest.mark.unit

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def lines(*rows: object) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def issue_map(result) -> dict[tuple[int, str], str]:
    return {(i.line, i.field): i.code for i in result.issues}


GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_each_chat_error_is_reported_with_its_line_and_field():
    data = (
        lines(
            GOOD,  # 1 ok
            "{not json",  # 2
            [1, 2],  # 3
            {"text": "no messages"},  # 4
            {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},  # 5
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]},  # 6
            {"messages": [{"role": "user", "content": "only a question"}]},  # 7
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "system", "content": "late"},
                    {"role": "assistant", "content": "b"},
                ]
            },  # 8
            {"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]},  # 9
            {"messages": "not a list"},  # 10
        )
        + b"\xff\xfe broken\n"
    )  # 11
    result = validate(data, "chat")
    assert issue_map(result) == {
        (2, ""): "invalid_json",
        (3, ""): "not_an_object",
        (4, "messages"): "missing_field",
        (5, "messages[1].role"): "bad_role",
        (6, "messages[1].content"): "empty_content",
        (7, "messages"): "no_assistant",
        (8, "messages[1].role"): "bad_role",
        (9, "messages[0].content"): "missing_field",
        (10, "messages"): "wrong_type",
        (11, ""): "invalid_utf8",
    }
    assert result.error_count == 10 and result.warning_count == 0
    assert result.row_count == 11
    assert [r.line for r in result.rows] == [1]


def test_completion_rows_need_both_fields_non_empty_and_duplicates_warn():
    data = lines(
        {"prompt": "2+2=", "completion": "4"},
        {"prompt": "", "completion": "x"},
        {"prompt": "p"},
        {"prompt": "p", "completion": 3},
        {"completion": "4", "prompt": "2+2="},  # the same row, keys in another order
    )
    result = validate(data, "completion")
    assert issue_map(result) == {
        (2, "prompt"): "empty_content",
        (3, "completion"): "missing_field",
        (4, "completion"): "wrong_type",
        (5, ""): "duplicate_row",
    }
    duplicate = next(i for i in result.issues if i.code == "duplicate_row")
    assert duplicate.severity == "warning" and "line 1" in duplicate.message
    assert result.error_count == 3 and result.warning_count == 1


def test_blank_lines_are_skipped_but_keep_line_numbers():
    result = validate(b"\n" + lines(GOOD) + b"\n\n" + b"{\n", "chat")
    assert result.row_count == 2
    assert [r.line for r in result.rows] == [2]
    assert issue_map(result) == {(5, ""): "invalid_json"}


def test_an_empty_file_is_an_error():
    result = validate(b"\n\n", "chat")
    assert result.row_count == 0 and issue_map(result) == {(0, ""): "empty_dataset"}


def test_version_is_the_same_for_the_same_rows_however_formatted():
    compact = lines(GOOD, {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})
    spaced = (
        json.dumps(GOOD, indent=None, separators=(" , ", " : "))
        + "\r\n"
        + '{"messages":[{"content":"x","role":"user"},{"content":"y","role":"assistant"}]}\r\n'
    ).encode()
    first, second = validate(compact, "chat"), validate(spaced, "chat")
    assert first.version == second.version
    assert len(first.version) == 64 and first.version == first.version.lower()
    reordered = validate(b"".join(reversed(compact.splitlines(keepends=True))), "chat")
    assert reordered.version != first.version


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model(MODEL).path)


def test_chat_rows_are_measured_with_the_chat_template(tokenizer):
    rows = [
        GOOD,
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Why?"},
                {"role": "assistant", "content": "Because the sky scatters blue light more."},
            ]
        },
    ]
    cached, model_id = load_tokenizer(MODEL)
    assert model_id == MODEL
    expected = [
        len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_tensors="pt")["input_ids"][0])
        for r in rows
    ]
    assert token_lengths(cached, rows, "chat") == expected
    assert all(n > 5 for n in expected)


def test_completion_rows_count_prompt_completion_and_eos(tokenizer):
    rows = [{"prompt": "The capital of France is", "completion": " Paris."}]
    expected = (
        len(tokenizer("The capital of France is")["input_ids"])
        + len(tokenizer(" Paris.", add_special_tokens=False)["input_ids"])
        + 1
    )
    assert token_lengths(load_tokenizer(MODEL)[0], rows, "completion") == [expected]


def test_summary_statistics_and_histogram_buckets():
    stats = summarise([10, 32, 33, 64, 100, 5000, 9000], "tok", max_length=64, bounds=(32, 64, 128))
    assert stats.total_tokens == 14239
    assert (stats.min_tokens, stats.max_tokens) == (10, 9000)
    assert stats.mean_tokens == pytest.approx(14239 / 7)
    assert stats.p50_tokens == 64 and stats.p95_tokens == 9000
    assert stats.counts == [2, 2, 1, 2]  # <=32, (32,64], (64,128], >128
    assert stats.truncated_rows == 3


def test_analyse_counts_too_long_rows_as_warnings_and_truncations():
    short = {"prompt": "Hi", "completion": "there"}
    long = {"prompt": "word " * 60, "completion": "done"}
    validated, stats = analyse(lines(short, long), "completion", MODEL, max_length=32)
    assert stats.truncated_rows == 1 and stats.max_length == 32
    assert issue_map(validated) == {(2, ""): "too_long"}
    assert validated.error_count == 0 and validated.warning_count == 1
    assert sum(stats.counts) == 2 and stats.tokenizer == MODEL
