"""Prompt templates for Ask: a small registry of named templates, custom templates, and the context budget.

A template renders as a chat: an optional system message and a user message holding the numbered passages and
the question. Passages are numbered from 1 in retrieval order, each as ``[n] Title: <title>`` followed by its
text, so the model can cite them as ``[n]``.

Placeholders are ``{question}`` and ``{context}``. They are substituted in one pass by a regular expression, never
by ``str.format``: braces in the question, the passages or elsewhere in a template are copied as they are, and
``{{`` / ``}}`` write a literal ``{`` / ``}`` (as in ``str.format``), so ``{{question}}`` is text, not a
placeholder. Nothing a caller writes can make rendering raise.

The gateway has no tokenizer of the generation model, so it estimates tokens conservatively as
``ceil(characters / 3)`` (:data:`CHARS_PER_TOKEN`): Llama-style BPE tokenizers average about four characters per
token on English prose, so the estimate over-counts and the prompt really fits. Text dense in digits, code or
non-Latin scripts can tokenize shorter than three characters per token; the generation service still refuses a
prompt over its context with INVALID_ARGUMENT, so a wrong estimate costs an error, never a silent truncation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

#: The longest question accepted, in characters (code points).
MAX_QUESTION_CHARS = 4000
#: The longest custom template accepted, in characters.
MAX_TEMPLATE_CHARS = 8000
#: Characters per token assumed when estimating a prompt's size (see the module docstring).
CHARS_PER_TOKEN = 3
#: Tokens reserved for what the chat template adds around the messages (role markers, special tokens, a default
#: system prompt when the template has one and we send none).
CHAT_OVERHEAD_TOKENS = 64
#: A passage that does not fit whole is cut to fit when at least this many characters of it would remain; a shorter
#: remainder is not worth a citation and the passage is dropped instead.
MIN_CUT_CHARS = 200

PLACEHOLDERS = ("question", "context")
_TOKEN = re.compile(r"\{\{|\}\}|\{(question|context)\}")
_NO_PASSAGES = "(No passages were found.)"


@dataclass(frozen=True)
class Passage:
    """One retrieved chunk as given to the model: its number in the prompt, where it comes from, and its text."""

    number: int
    document_id: str
    chunk_id: str
    char_start: int
    char_end: int
    score: float
    title: str
    source_uri: str
    text: str


@dataclass(frozen=True)
class ChatTurn:
    """One message of the rendered prompt; ``role`` is "system" or "user"."""

    role: str
    content: str


@dataclass(frozen=True)
class PromptTemplate:
    """A template: an optional system message and a user message with ``{question}`` and ``{context}``."""

    name: str
    user: str
    system: str = ""

    def render(self, question: str, passages: Sequence[Passage]) -> list[ChatTurn]:
        """The chat for ``question`` with ``passages`` numbered as they are (``Passage.number``)."""
        turns = [ChatTurn("system", self.system)] if self.system else []
        return [*turns, ChatTurn("user", fill(self.user, question=question, context=render_context(passages)))]


TEMPLATES: dict[str, PromptTemplate] = {
    "default": PromptTemplate(
        name="default",
        system=(
            "You answer questions using only the numbered passages you are given. After each statement, cite the "
            "passages it comes from by their numbers in square brackets, for example [1] or [2][3]. If the "
            "passages do not contain the answer, say that you do not know; do not use other knowledge."
        ),
        user="Passages:\n\n{context}\n\nQuestion: {question}",
    ),
    "concise": PromptTemplate(
        name="concise",
        system=(
            "Answer in one or two sentences using only the numbered passages you are given, citing them as [n]. "
            "If the passages do not contain the answer, say that you do not know."
        ),
        user="Passages:\n\n{context}\n\nQuestion: {question}",
    ),
}
DEFAULT_TEMPLATE = "default"


def fill(template: str, *, question: str, context: str) -> str:
    """``template`` with its placeholders replaced in one pass; ``{{`` and ``}}`` become ``{`` and ``}``."""
    values = {"question": question, "context": context}

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]

    return _TOKEN.sub(substitute, template)


def missing_placeholders(template: str) -> list[str]:
    """The placeholders ``template`` lacks (an escaped ``{{question}}`` does not count), in a fixed order."""
    found = {match.group(1) for match in _TOKEN.finditer(template) if match.group(1)}
    return [name for name in PLACEHOLDERS if name not in found]


def custom_template(text: str) -> PromptTemplate:
    """A caller's template: the whole user message, with no system message of ours (the model's own applies)."""
    return PromptTemplate(name="custom", user=text)


def passage_block(passage: Passage) -> str:
    """How one passage appears in the context: ``[n] Title: <title>`` (or ``[n]``) and its text on the next line."""
    header = f"[{passage.number}] Title: {passage.title}" if passage.title else f"[{passage.number}]"
    return f"{header}\n{passage.text}"


def render_context(passages: Sequence[Passage]) -> str:
    """The numbered passages separated by blank lines, or a note that there are none."""
    return "\n\n".join(passage_block(p) for p in passages) if passages else _NO_PASSAGES


def estimate_tokens(text: str) -> int:
    """A conservative token count for ``text`` (see the module docstring)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(turns: Sequence[ChatTurn]) -> int:
    return CHAT_OVERHEAD_TOKENS + sum(estimate_tokens(turn.content) for turn in turns)


@dataclass(frozen=True)
class FittedContext:
    """The passages that fit the model's context, and what was left out to make them fit."""

    passages: list[Passage]
    dropped: int  # passages left out entirely
    cut: bool  # the last kept passage was shortened
    budget_tokens: int  # tokens available for the prompt

    @property
    def reduced(self) -> bool:
        return self.dropped > 0 or self.cut


def fit_passages(
    template: PromptTemplate,
    question: str,
    passages: Sequence[Passage],
    *,
    max_context_tokens: int,
    max_new_tokens: int,
) -> FittedContext:
    """Keep leading passages while the estimated prompt plus ``max_new_tokens`` fits ``max_context_tokens``.

    The first passage that does not fit whole is cut (at a word boundary) when at least :data:`MIN_CUT_CHARS` of
    it fit; it and every later passage are dropped otherwise. A cut passage's ``char_end`` is moved so that it
    still spans exactly its (shorter) text in the document.
    """
    budget = max_context_tokens - max_new_tokens
    size = _PromptSize(template, question)
    kept: list[Passage] = []
    context_chars = 0
    for index, passage in enumerate(passages):
        separator = 2 if kept else 0  # the blank line between passages
        block = len(passage_block(passage))
        if size.tokens(context_chars + separator + block) <= budget:
            kept.append(passage)
            context_chars += separator + block
            continue
        header = len(passage_block(replace(passage, text="")))
        room = size.room(budget, context_chars + separator + header)
        if room >= MIN_CUT_CHARS:
            text = passage.text[:room]
            boundary = text.rfind(" ")
            if boundary >= MIN_CUT_CHARS:
                text = text[:boundary]
            shortened = replace(passage, text=text, char_end=passage.char_start + len(text))
            return FittedContext([*kept, shortened], len(passages) - index - 1, True, budget)
        return FittedContext(kept, len(passages) - index, False, budget)
    return FittedContext(kept, 0, False, budget)


class _PromptSize:
    """The estimated size of a template's prompt as a function of its context's length, without rendering it."""

    def __init__(self, template: PromptTemplate, question: str) -> None:
        self._fixed_tokens = CHAT_OVERHEAD_TOKENS + (estimate_tokens(template.system) if template.system else 0)
        self._user_chars = len(fill(template.user, question=question, context=""))
        # A custom template may repeat {context}; each occurrence costs the whole context.
        self._copies = sum(1 for m in _TOKEN.finditer(template.user) if m.group(1) == "context")

    def tokens(self, context_chars: int) -> int:
        return self._fixed_tokens + math.ceil((self._user_chars + self._copies * context_chars) / CHARS_PER_TOKEN)

    def room(self, budget: int, context_chars: int) -> int:
        """How many more context characters fit in ``budget`` tokens after ``context_chars``."""
        spare_chars = (budget - self._fixed_tokens) * CHARS_PER_TOKEN - self._user_chars
        return (spare_chars - self._copies * context_chars) // max(self._copies, 1)


__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_TEMPLATE",
    "MAX_QUESTION_CHARS",
    "MAX_TEMPLATE_CHARS",
    "TEMPLATES",
    "ChatTurn",
    "FittedContext",
    "Passage",
    "PromptTemplate",
    "custom_template",
    "estimate_tokens",
    "fill",
    "fit_passages",
    "missing_placeholders",
    "render_context",
]
