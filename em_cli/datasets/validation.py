"""Validate JSONL chat files and report every problem as `file:line: problem`.

Unlike `iter_jsonl`, a malformed line does not stop validation: it is one problem among
others and the next line is checked.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from em_cli.artifacts.jsonl import is_stdio
from em_cli.datasets.conversations import ROLES, conversation_key


@dataclass(frozen=True)
class Problem:
    """One problem: where (file, line; line None for the whole file) and what."""

    file: str
    line: int | None
    problem: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationReport:
    """The problems of one file and how many rows (non-blank lines) it had."""

    file: str
    rows: int
    problems: list[Problem]

    @property
    def bad_rows(self) -> int:
        return len({p.line for p in self.problems if p.line is not None})


def check_record(record: Any) -> list[str]:
    """Schema problems of one parsed record (duplicates are checked across records elsewhere).

    >>> check_record({"messages": [{"role": "user", "content": "hi"}]})
    ['no assistant turn', 'last turn is user, expected assistant']
    """
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {_json_type(record)}"]
    if "messages" not in record:
        return ["missing 'messages'"]
    messages = record["messages"]
    if not isinstance(messages, list):
        return [f"'messages' must be a list, got {_json_type(messages)}"]
    if not messages:
        return ["'messages' is empty"]
    problems: list[str] = []
    roles: list[str | None] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            problems.append(f"{where}: expected an object with role and content, got {_json_type(message)}")
            roles.append(None)
            continue
        role = message.get("role")
        if "role" not in message:
            problems.append(f"{where}: missing 'role'")
        elif role not in ROLES:
            problems.append(f"{where}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        elif role == "system" and index > 0:
            problems.append(f"{where}: system turn not first")
        roles.append(role if role in ROLES else None)
        if "content" not in message:
            problems.append(f"{where}: missing 'content'")
        elif not isinstance(message["content"], str):
            problems.append(f"{where}: 'content' must be a string, got {_json_type(message['content'])}")
        elif not message["content"].strip():
            problems.append(f"{where}: empty content")
    if "user" not in roles:
        problems.append("no user turn")
    if "assistant" not in roles:
        problems.append("no assistant turn")
    last = roles[-1]
    if last is not None and last != "assistant":
        problems.append(f"last turn is {last}, expected assistant")
    return problems


def validate_lines(lines: Iterable[bytes | str], name: str) -> ValidationReport:
    """Validate the lines of one JSONL chat file called `name` (used in the messages)."""
    problems: list[Problem] = []
    first_line_of: dict[str, int] = {}
    rows = 0
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                rows += 1
                problems.append(Problem(name, number, f"not UTF-8 text ({exc.reason})"))
                continue
        if number == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark is not data
        if not line.strip():
            continue
        rows += 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(name, number, f"invalid JSON ({exc.msg} at column {exc.colno})"))
            continue
        found = check_record(record)
        problems.extend(Problem(name, number, text) for text in found)
        if isinstance(record, dict) and isinstance(record.get("messages"), list) and record["messages"]:
            key = conversation_key(record["messages"])
            if key in first_line_of:
                problems.append(Problem(name, number, f"duplicate conversation (same messages as line {first_line_of[key]})"))
            else:
                first_line_of[key] = number
    return ValidationReport(file=name, rows=rows, problems=problems)


def validate_file(path: str | Path) -> ValidationReport:
    """Validate one JSONL chat file (`-` = stdin). A missing file is a problem, not an exception."""
    name = str(path)
    if is_stdio(path):
        return validate_lines(sys.stdin.buffer, "<stdin>")
    path = Path(path)
    if not path.exists():
        return ValidationReport(name, 0, [Problem(name, None, "file not found")])
    if path.is_dir():
        return ValidationReport(name, 0, [Problem(name, None, "is a directory, expected a JSONL file")])
    with path.open("rb") as handle:
        return validate_lines(handle, name)


@dataclass
class FilesReport:
    """The reports of several files checked together."""

    reports: list[ValidationReport]

    @property
    def problems(self) -> list[Problem]:
        return [problem for report in self.reports for problem in report.problems]

    @property
    def empty_files(self) -> list[str]:
        return [report.file for report in self.reports if report.rows == 0]

    def summary(self) -> str:
        """One line: the problem count, or `ok`, with the rows and the files they were in."""
        rows = sum(report.rows for report in self.reports)
        where = f"{len(self.reports)} files" if len(self.reports) > 1 else self.reports[0].file
        problems = self.problems
        if not problems:
            return f"ok: {rows} rows, no problems ({where})"
        bad = sum(report.bad_rows for report in self.reports)
        return f"{len(problems)} problem{'s' * (len(problems) != 1)} in {bad} of {rows} rows ({where})"

    def to_dict(self) -> dict[str, Any]:
        return {"problems": [problem.to_dict() for problem in self.problems], "summary": self.summary()}


def validate_files(paths: Iterable[str | Path]) -> FilesReport:
    """Validate each file (`validate_file`)."""
    return FilesReport([validate_file(path) for path in paths])


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
