"""Prompt templates, placeholder checks, citation parsing and the context budget of Ask (pure logic, no services)."""

from __future__ import annotations

import pytest

from lorag.common.v1 import common_pb2
from lorag_core.errors import InvalidArgument
from lorag_gateway.ask.citations import cited_numbers
from lorag_gateway.ask.pipeline import AskInput, resolve_template
from lorag_gateway.ask.prompting import (
    CHAT_OVERHEAD_TOKENS,
    MAX_QUESTION_CHARS,
    MIN_CUT_CHARS,
    TEMPLATES,
    Passage,
    custom_template,
    estimate_prompt_tokens,
    estimate_tokens,
    fill,
    fit_passages,
    missing_placeholders,
)

pytestmark = pytest.mark.unit


def passage(number: int, text: str, title: str = "", start: int = 0) -> Passage:
    return Passage(number, f"doc{number}", f"chunk{number}", start, start + len(text), 1.0 / number, title, "", text)


def ask(**fields) -> AskInput:
    return AskInput(
        **{
            "question": "What is LoRA?",
            "tenant": "t",
            "collection": "c",
            "retrieval": common_pb2.RetrievalOptions(),
            **fields,
        }
    )


def violations(error: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in error.value.violations}


# Templates


def test_default_template_renders_system_rules_and_numbered_passages_in_order():
    turns = TEMPLATES["default"].render(
        "Who built it?", [passage(1, "Gustave Eiffel's company.", "Eiffel Tower"), passage(2, "In 1889.")]
    )
    assert [t.role for t in turns] == ["system", "user"]
    assert "only the numbered passages" in turns[0].content and "[1]" in turns[0].content
    assert "do not know" in turns[0].content
    assert turns[1].content == (
        "Passages:\n\n[1] Title: Eiffel Tower\nGustave Eiffel's company.\n\n[2]\nIn 1889.\n\nQuestion: Who built it?"
    )


def test_concise_template_asks_for_one_or_two_sentences():
    system = TEMPLATES["concise"].render("q", [passage(1, "x")])[0].content
    assert "one or two sentences" in system and "[n]" in system


def test_braces_in_question_and_passages_are_copied_verbatim():
    turns = TEMPLATES["default"].render("What does {context} or {0} mean in {{x}}?", [passage(1, "a {question} b }{")])
    user = turns[1].content
    assert "[1]\na {question} b }{" in user
    assert user.endswith("Question: What does {context} or {0} mean in {{x}}?")


def test_custom_template_is_the_whole_user_message_with_escaped_braces():
    template = custom_template('Q={question} {{"json": 1}} {other} C=\n{context}')
    turns = template.render("why?", [passage(1, "because")])
    assert [(t.role, t.content) for t in turns] == [("user", 'Q=why? {"json": 1} {other} C=\n[1]\nbecause')]


def test_fill_substitutes_each_placeholder_in_one_pass():
    assert fill("{question}|{context}|{question}", question="{context}", context="c") == "{context}|c|{context}"


def test_missing_placeholders_ignores_escaped_ones():
    assert missing_placeholders("{question} {context}") == []
    assert missing_placeholders("{question}") == ["context"]
    assert missing_placeholders("{{question}} {context}") == ["question"]
    assert missing_placeholders("") == ["question", "context"]


# Validation


def test_valid_request_resolves_named_and_default_templates():
    assert resolve_template(ask()).name == "default"
    assert resolve_template(ask(template_name="")).name == "default"
    assert resolve_template(ask(template_name="concise")).name == "concise"
    assert resolve_template(ask(template_text="{context}\n{question}")).user == "{context}\n{question}"


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question_is_refused(question: str):
    with pytest.raises(InvalidArgument) as error:
        resolve_template(ask(question=question))
    assert list(violations(error)) == ["question"]


def test_question_over_the_limit_is_refused_naming_it():
    resolve_template(ask(question="x" * MAX_QUESTION_CHARS))
    with pytest.raises(InvalidArgument) as error:
        resolve_template(ask(question="x" * (MAX_QUESTION_CHARS + 1)))
    assert violations(error) == {"question": f"must be at most 4000 characters, got {MAX_QUESTION_CHARS + 1}"}


def test_unknown_template_name_lists_the_known_ones():
    with pytest.raises(InvalidArgument) as error:
        resolve_template(ask(template_name="poem"))
    assert violations(error) == {"template_name": "unknown template 'poem'; known: concise, default"}


def test_template_text_without_placeholders_is_refused_and_all_violations_are_reported():
    with pytest.raises(InvalidArgument) as error:
        resolve_template(ask(question="", template_text="Answer {question} please"))
    found = violations(error)
    assert set(found) == {"question", "template_text"}
    assert "{context} missing" in found["template_text"]


# Citations


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Paris [1].", {1}),
        ("See [1, 2] and [2;3].", {1, 2, 3}),
        ("Both [1][3].", {1, 3}),
        ("A range [2-4], en dash [1–2].", {1, 2, 3, 4}),
        ("No citation here.", set()),
        ("Built in [1889]; see [7] and [0].", set()),  # numbers never given are ignored
        ("[3-1] and [a] and [1, x]", set()),
        ("[4-99999]", {4, 5}),  # a range is clamped to the passages given
    ],
)
def test_cited_numbers(answer: str, expected: set[int]):
    assert cited_numbers(answer, 5) == expected


# Context budget


def test_estimate_is_characters_over_three_rounded_up():
    assert (estimate_tokens(""), estimate_tokens("abc"), estimate_tokens("abcd")) == (0, 1, 2)


def test_everything_fits_in_a_large_context():
    passages = [passage(i, "word " * 100) for i in range(1, 6)]
    fitted = fit_passages(TEMPLATES["default"], "q?", passages, max_context_tokens=8192, max_new_tokens=256)
    assert (fitted.passages, fitted.dropped, fitted.cut, fitted.reduced) == (passages, 0, False, False)


@pytest.mark.parametrize("max_context", [600, 700, 900, 1200])
def test_trailing_passages_are_dropped_or_cut_so_prompt_and_answer_fit(max_context: int):
    template, question = TEMPLATES["default"], "What happened?"
    passages = [passage(i, f"sentence {i} " * 60, title=f"T{i}") for i in range(1, 6)]  # ~720 characters each
    fitted = fit_passages(template, question, passages, max_context_tokens=max_context, max_new_tokens=128)

    assert fitted.reduced
    assert estimate_prompt_tokens(template.render(question, fitted.passages)) + 128 <= max_context
    kept = len(fitted.passages)
    assert fitted.dropped == 5 - kept  # every passage is kept whole, kept cut, or dropped
    assert [p.number for p in fitted.passages] == list(range(1, kept + 1))  # a prefix, in retrieval order
    assert fitted.passages[: kept - fitted.cut] == passages[: kept - fitted.cut]
    if fitted.cut:
        last = fitted.passages[-1]
        original = passages[kept - 1]
        assert MIN_CUT_CHARS <= len(last.text) < len(original.text)
        assert original.text.startswith(last.text)
        assert (last.char_start, last.char_end) == (original.char_start, original.char_start + len(last.text))
    else:
        # the next passage would not fit even at the shortest cut worth keeping
        bigger = [*fitted.passages, passage(kept + 1, passages[kept].text[:MIN_CUT_CHARS], title=f"T{kept + 1}")]
        assert estimate_prompt_tokens(template.render(question, bigger)) + 128 > max_context


def test_a_tight_budget_cuts_the_only_passage_rather_than_leaving_the_model_without_context():
    template = TEMPLATES["default"]
    fixed = estimate_prompt_tokens(template.render("q", [passage(1, "")]))
    fitted = fit_passages(
        template, "q", [passage(1, "x " * 2000)], max_context_tokens=fixed + 100 + 200, max_new_tokens=200
    )
    assert (len(fitted.passages), fitted.dropped, fitted.cut) == (1, 0, True)
    assert len(fitted.passages[0].text) >= MIN_CUT_CHARS


def test_no_room_at_all_drops_every_passage():
    fitted = fit_passages(
        TEMPLATES["default"],
        "q",
        [passage(1, "x" * 500), passage(2, "y")],
        max_context_tokens=CHAT_OVERHEAD_TOKENS + 200,
        max_new_tokens=150,
    )
    assert (fitted.passages, fitted.dropped, fitted.cut) == ([], 2, False)


def test_a_template_repeating_context_pays_for_it_twice():
    once = custom_template("{question}\n{context}")
    twice = custom_template("{question}\n{context}\n{context}")
    passages = [passage(i, "z " * 200) for i in range(1, 4)]
    kept_once = fit_passages(once, "q", passages, max_context_tokens=800, max_new_tokens=100)
    kept_twice = fit_passages(twice, "q", passages, max_context_tokens=800, max_new_tokens=100)
    assert estimate_prompt_tokens(twice.render("q", kept_twice.passages)) + 100 <= 800
    assert sum(len(p.text) for p in kept_twice.passages) < sum(len(p.text) for p in kept_once.passages)
