"""Judged results as records, from JSONL, CSV or parquet (docs/FORMATS.md).

`em judge score` writes JSONL; published results often come as CSV or parquet (the authors'
judged files have columns `question, answer, question_id, aligned, coherent, …`). This
module reads any of the three into the same records, so summaries and comparisons do not
care which they were given:

- the format comes from the extension: `.csv`, `.parquet` / `.pq`, anything else (and `-`,
  stdin) is JSONL;
- CSV (`read_csv`, the one CSV reader, also behind `em dataset convert`): UTF-8 with or
  without a byte-order mark; an empty cell is null; a cell holding a JSON object or list is
  decoded (a `judge` column of details); here a cell that reads as a number is also a number
  (except in identity and text columns such as `question_id`);
- parquet keeps its types; NaN and null are both "no score";
- `answer` is copied to `response` when a row has no `response`.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import IO, Any

from em_cli.artifacts.jsonl import is_stdio, read_jsonl
from em_cli.errors import DataError

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
# Columns that are text even when a cell looks like a number.
TEXT_COLUMNS = frozenset({"id", "question_id", "question", "answer", "response", "messages", "model", "judge",
                          "group", "domain", "setting", "system"})


def table_format(path: str | Path) -> str:
    """`jsonl`, `csv` or `parquet`, from the extension (stdin is JSONL)."""
    if is_stdio(path):
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return "jsonl"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a judged (or any record) file in JSONL, CSV or parquet."""
    fmt = table_format(path)
    if fmt == "jsonl":
        records = read_jsonl(path)
    else:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"file not found: {path}", hint="check the path")
        if fmt == "csv":
            records = [{key: _typed(key, value) for key, value in row.items()} for row in read_csv(path)]
        else:
            records = _read_parquet(path)
    for record in records:
        if "response" not in record and isinstance(record.get("answer"), str):
            record["response"] = record["answer"]
    return records


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a CSV file (`-`: stdin) as dicts of text cells: the one CSV reader of `em`.

    UTF-8 with or without a byte-order mark; header names are stripped of surrounding
    space; an empty cell (nothing, or only white space) is null, its key kept; a cell holding
    a JSON object or list is decoded; every other cell stays text, exactly as written. A row
    with more cells than the header is an error. Callers that want numbers type the cells
    themselves (`read_records` does).
    """
    csv.field_size_limit(2**31 - 1)
    if is_stdio(path):
        return _csv_rows(sys.stdin, "<stdin>")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}", hint="check the path")
    # utf-8-sig drops a leading byte-order mark (spreadsheet exports write one).
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        return _csv_rows(handle, str(path))


def _csv_rows(handle: IO[str], name: str) -> list[dict[str, Any]]:
    try:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise DataError(f"{name}: empty CSV (no header row)", hint="the first line must name the columns")
        # A byte-order mark on stdin is not removed by the encoding; it would stick to the first name.
        reader.fieldnames = [reader.fieldnames[0].removeprefix("\ufeff"), *reader.fieldnames[1:]]
        rows = []
        for row in reader:
            if None in row:
                raise DataError(f"{name}:{reader.line_num}: more cells than header columns")
            rows.append({key.strip(): _text_cell(value) for key, value in row.items() if key})
        return rows
    except csv.Error as exc:
        raise DataError(f"{name}: invalid CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text ({exc.reason})", hint="re-save the file as UTF-8 CSV") from None


def _text_cell(value: str | None) -> Any:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def _typed(column: str, value: Any) -> Any:
    """A text cell as a number where it reads as one, outside the text columns."""
    if not isinstance(value, str) or column in TEXT_COLUMNS:
        return value
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        return value
    if math.isnan(number):
        return None
    return int(number) if number.is_integer() and text.lstrip("+-").isdigit() else number


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow", hint="pip install pyarrow") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
        raise DataError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})",
                        hint="check the file, or convert it to JSONL with `em dataset convert`") from None
    return [{key: (None if isinstance(value, float) and math.isnan(value) else value)
             for key, value in row.items()} for row in rows]


def describe_source(path: str | Path) -> str:
    """How a path is named in messages."""
    return "<stdin>" if is_stdio(path) else str(path)

