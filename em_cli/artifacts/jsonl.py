"""JSONL record files: reading with file:line errors, atomic and resumable writing.

Records are plain dicts so that keys `em` does not know survive a read/write round trip.
`-` as a path means stdin (reading) or stdout (writing).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from em_cli.artifacts.atomic import atomic_write, writable_target
from em_cli.errors import DataError

STDIO = "-"


def is_stdio(path: str | Path) -> bool:
    return str(path) == STDIO


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for each non-blank line of a JSONL file.

    Raises DataError naming file and line for invalid JSON or a line that is not an object.
    """
    if is_stdio(path):
        yield from parse_jsonl_lines(sys.stdin, "<stdin>")
        return
    path = Path(path)
    if not path.exists():
        raise DataError(f"file not found: {path}", hint="check the path, or use - for stdin")
    if path.is_dir():
        raise DataError(f"{path} is a directory, expected a JSONL file")
    if path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq"):
        raise DataError(f"{path} is a {path.suffix.lstrip('.').upper()} file; this command reads JSONL",
                        hint=f"convert it first: em dataset convert {path} -o {path.with_suffix('.jsonl')}")
    with path.open("r", encoding="utf-8") as handle:
        yield from parse_jsonl_lines(handle, str(path))


def parse_jsonl_lines(handle: IO[str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line of an open text stream (see `iter_jsonl`)."""
    try:
        for number, line in enumerate(handle, start=1):
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte-order mark (Excel, Notepad) is not data
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{name}:{number}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{name}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text ({exc.reason})") from None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL file (see `iter_jsonl`)."""
    return [record for _, record in iter_jsonl(path)]


def dumps(record: dict[str, Any]) -> str:
    """One record as one JSONL line (no trailing newline)."""
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records to `path` atomically (or to stdout for `-`); return the count."""
    count = 0
    if is_stdio(path):
        for record in records:
            sys.stdout.write(dumps(record) + "\n")
            count += 1
        sys.stdout.flush()
        return count
    with atomic_write(path) as handle:
        for record in records:
            handle.write(dumps(record) + "\n")
            count += 1
    return count


class ResumableJsonl:
    """An output file that grows record by record and survives interruption.

    Records are appended (and flushed) one line at a time to `<path>.partial`; `finish()`
    renames it onto `path`. So the final name only ever holds a complete file, and a killed
    run leaves a `.partial` whose complete lines are picked up by the next run. A torn last
    line (the process died mid-write) is dropped on reopen.

    With `-` as path, records stream to stdout and nothing is resumable.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.existing: list[dict[str, Any]] = []
        self._handle: IO[str] | None = None
        if is_stdio(path):
            return
        final = writable_target(Path(path))
        self.partial = final.with_name(final.name + ".partial")
        if not self.partial.exists() and final.exists():
            shutil.copyfile(final, self.partial)
        if self.partial.exists():
            _drop_torn_tail(self.partial)
            self.existing = read_jsonl(self.partial)

    def __enter__(self) -> ResumableJsonl:
        if is_stdio(self.path):
            self._handle = sys.stdout
        else:
            self._handle = self.partial.open("a", encoding="utf-8")
        return self

    def append(self, record: dict[str, Any]) -> None:
        assert self._handle is not None, "use ResumableJsonl as a context manager"
        self._handle.write(dumps(record) + "\n")
        self._handle.flush()

    def finish(self) -> None:
        """Mark the output complete: move `.partial` onto the final name."""
        if is_stdio(self.path):
            return
        self._close()
        with self.partial.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.partial, Path(self.path))

    def _close(self) -> None:
        if self._handle is not None and self._handle is not sys.stdout:
            self._handle.close()
        self._handle = None

    def __exit__(self, *exc: object) -> None:
        self._close()


def _drop_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as handle:
            handle.truncate(cut)
