"""Validate a JSONL training file row by row, and normalise it into its content version.

Every line is checked before anything is stored. A problem is a :class:`Issue` with the 1-based line number, the
field path inside the row (``messages[2].role``) and a stable code, so a user can fix the file line by line. Errors
make a row untrainable (and the dataset with it); warnings (duplicates, over-long rows) do not.

The version is the SHA-256 of the normalised rows: each row re-serialised as canonical JSON (sorted keys, no
insignificant whitespace), one per line, so the same rows give the same version however they were formatted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Format = Literal["chat", "completion"]
ERROR = "error"
WARNING = "warning"
ROLES = ("system", "user", "assistant")
MAX_REPORTED_ISSUES = 1000


@dataclass(frozen=True)
class Issue:
    """One problem: ``line`` 0 means the whole file; ``field`` empty means the whole row."""

    line: int
    field: str
    message: str
    code: str
    severity: str = ERROR


@dataclass
class Row:
    """A row that passed validation: its line, its parsed value and its canonical JSON."""

    line: int
    value: dict[str, Any]
    canonical: str


@dataclass
class ValidatedFile:
    """The outcome of validating one upload."""

    format: Format
    row_count: int  # non-blank lines, valid or not
    size_bytes: int
    rows: list[Row]  # valid rows, in file order
    normalised: list[str]  # one canonical line per non-blank line (raw text where it is not JSON)
    issues: list[Issue] = field(default_factory=list)
    error_count: int = 0
    warning_count: int = 0

    @property
    def version(self) -> str:
        return content_version(self.normalised)

    def add(self, issue: Issue) -> None:
        if issue.severity == ERROR:
            self.error_count += 1
        else:
            self.warning_count += 1
        self.issues.append(issue)

    def reported_issues(self) -> tuple[list[Issue], bool]:
        """Issues in line order, at most MAX_REPORTED_ISSUES, and whether some were left out."""
        ordered = sorted(self.issues, key=lambda i: i.line)
        return ordered[:MAX_REPORTED_ISSUES], len(ordered) > MAX_REPORTED_ISSUES


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_version(lines: list[str]) -> str:
    """Lower-case hex SHA-256 of the normalised rows, one per line."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _nonempty_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _check_chat(row: dict[str, Any], line: int) -> list[Issue]:
    issues: list[Issue] = []
    if "messages" not in row:
        return [Issue(line, "messages", 'a chat row needs a "messages" list', "missing_field")]
    messages = row["messages"]
    if not isinstance(messages, list):
        return [Issue(line, "messages", 'must be a list of {"role", "content"} objects', "wrong_type")]
    if not messages:
        return [Issue(line, "messages", "must hold at least one message", "empty_messages")]
    assistant_turns = 0
    for index, message in enumerate(messages):
        path = f"messages[{index}]"
        if not isinstance(message, dict):
            issues.append(Issue(line, path, 'must be an object with "role" and "content"', "wrong_type"))
            continue
        role = message.get("role")
        if "role" not in message:
            issues.append(Issue(line, f"{path}.role", "missing", "missing_field"))
        elif role not in ROLES:
            issues.append(Issue(line, f"{path}.role", f"{role!r} is not one of system, user, assistant", "bad_role"))
        elif role == "system" and index != 0:
            issues.append(Issue(line, f"{path}.role", "a system message may only come first", "bad_role"))
        elif role == "assistant":
            assistant_turns += 1
        content = message.get("content")
        if "content" not in message:
            issues.append(Issue(line, f"{path}.content", "missing", "missing_field"))
        elif not isinstance(content, str):
            issues.append(Issue(line, f"{path}.content", "must be a string", "wrong_type"))
        elif not content.strip():
            issues.append(Issue(line, f"{path}.content", "is empty", "empty_content"))
    if assistant_turns == 0 and not any(i.code == "bad_role" for i in issues):
        issues.append(Issue(line, "messages", "needs at least one assistant message to learn from", "no_assistant"))
    elif messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "user" and assistant_turns:
        issues.append(
            Issue(
                line,
                f"messages[{len(messages) - 1}]",
                "the last turn is a user message, which is not trained on",
                "trailing_user_turn",
                WARNING,
            )
        )
    return issues


def _check_completion(row: dict[str, Any], line: int) -> list[Issue]:
    issues: list[Issue] = []
    for name in ("prompt", "completion"):
        if name not in row:
            issues.append(Issue(line, name, f'a completion row needs "{name}"', "missing_field"))
        elif not isinstance(row[name], str):
            issues.append(Issue(line, name, "must be a string", "wrong_type"))
        elif not _nonempty_string(row[name]):
            issues.append(Issue(line, name, "is empty", "empty_content"))
    return issues


def validate(data: bytes, fmt: Format) -> ValidatedFile:
    """Check every line of ``data``; rows with errors are left out of ``rows`` but keep their line numbers."""
    result = ValidatedFile(format=fmt, row_count=0, size_bytes=len(data), rows=[], normalised=[])
    seen: dict[str, int] = {}
    check = _check_chat if fmt == "chat" else _check_completion
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        result.row_count += 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            result.normalised.append(raw.decode("utf-8", errors="replace"))
            result.add(Issue(number, "", f"not valid UTF-8 (byte {exc.start})", "invalid_utf8"))
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            result.normalised.append(text.strip())
            result.add(Issue(number, "", f"not valid JSON: {exc.msg} at column {exc.colno}", "invalid_json"))
            continue
        canonical = canonical_json(value)
        result.normalised.append(canonical)
        if not isinstance(value, dict):
            result.add(Issue(number, "", f"must be a JSON object, not {type(value).__name__}", "not_an_object"))
            continue
        problems = check(value, number)
        for problem in problems:
            result.add(problem)
        if any(p.severity == ERROR for p in problems):
            continue
        if canonical in seen:
            result.add(Issue(number, "", f"duplicates line {seen[canonical]}", "duplicate_row", WARNING))
        else:
            seen[canonical] = number
        result.rows.append(Row(number, value, canonical))
    if result.row_count == 0:
        result.add(Issue(0, "", "the file holds no rows", "empty_dataset"))
    return result
