"""Convert chat datasets between JSONL, CSV, parquet and `datasets` saved with save_to_disk.

Two layouts of a conversation:

- `messages`: one `messages` column/key holding the list of turns (the JSONL schema).
- `prompt-completion`: a `prompt` column (the user turn), a `completion` column (the
  assistant turn) and, when there is one, a `system` column. Single-turn only.

Reading accepts either layout in any format and always yields chat records; a row in the
prompt-completion layout needs both a non-empty prompt and completion. CSV is read by
`artifacts.tables.read_csv`, the one CSV reader: cells are text (numbers and booleans stay
strings), the `messages` cell and cells holding a JSON object or list are decoded, and an
empty cell is null. Parquet and on-disk datasets keep types. The columns of all three are
shared by all rows, so converting reads a null top-level cell of theirs back as a missing
key (a JSONL null is kept).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_cli.artifacts.atomic import atomic_path, atomic_write
from em_cli.artifacts.jsonl import is_stdio, read_jsonl, write_jsonl
from em_cli.artifacts.tables import read_csv
from em_cli.datasets.conversations import messages_of
from em_cli.errors import DataError, UsageError

INPUT_FORMATS = ("jsonl", "csv", "parquet", "hf-disk")
OUTPUT_FORMATS = ("jsonl", "csv", "parquet")
LAYOUTS = ("messages", "prompt-completion")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
Row = dict[str, Any]


@dataclass(frozen=True)
class Columns:
    """Names of the prompt-completion columns."""

    prompt: str = "prompt"
    completion: str = "completion"
    system: str = "system"


def infer_format(path: str | Path, given: str | None, output: bool) -> str:
    """The format of `path`: `given` if set, else from the extension (a directory = hf-disk)."""
    allowed = OUTPUT_FORMATS if output else INPUT_FORMATS
    flag = "--to" if output else "--from"
    if given is not None:
        if given not in allowed:
            raise UsageError(f"unknown {flag} format {given!r}", hint=f"choose one of: {', '.join(allowed)}")
        return given
    if is_stdio(path):
        return "jsonl"
    path = Path(path)
    if not output and path.is_dir():
        return "hf-disk"
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the format of {path} from its extension", hint=f"pass {flag} "
                         f"({', '.join(allowed)})")
    return fmt


def default_layout(fmt: str) -> str:
    """CSV defaults to prompt-completion columns; JSONL and parquet keep `messages`."""
    return "prompt-completion" if fmt == "csv" else "messages"


# --- reading --------------------------------------------------------------------------------

def read_rows(path: str | Path, fmt: str, split: str | None = None) -> list[Row]:
    """The raw rows of a file in `fmt` (no layout conversion; a null cell is still there, as None)."""
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "csv":
        return read_csv(path)
    if is_stdio(path):
        raise UsageError(f"{fmt} cannot be read from stdin", hint="pass a file path")
    if not Path(path).exists():
        raise DataError(f"file not found: {path}")
    if fmt == "parquet":
        return _read_parquet(Path(path))
    if fmt == "hf-disk":
        return _read_hf_disk(Path(path), split)
    raise UsageError(f"unknown input format {fmt!r}")


def _quiet_datasets() -> Any:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _read_parquet(path: Path) -> list[Row]:
    datasets = _quiet_datasets()
    # A throwaway cache: reading a file should leave nothing behind in the user's HF cache.
    with tempfile.TemporaryDirectory(prefix="em-parquet-") as cache:
        try:
            table = datasets.Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
            raise DataError(f"{path}: cannot read as parquet ({type(exc).__name__}: {exc})") from None
        return table.to_list()


def _read_hf_disk(path: Path, split: str | None) -> list[Row]:
    datasets = _quiet_datasets()
    try:
        loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
    except FileNotFoundError as exc:
        raise DataError(f"{path} is not a dataset saved with save_to_disk ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if split is None and len(names) == 1:
            split = names[0]
        if split not in loaded:
            raise UsageError(f"{path} holds splits {', '.join(names)}; choose one with --split")
        loaded = loaded[split]
    elif split is not None:
        raise UsageError(f"{path} is a single dataset without splits; leave out --split")
    return loaded.to_list()


def drop_nulls(rows: Sequence[Row]) -> list[Row]:
    """Rows without their null cells: in a columnar file (CSV, parquet, a saved dataset) every row has
    every column, so a null there is how a missing key is written."""
    return [{key: value for key, value in row.items() if value is not None} for row in rows]


# --- layouts --------------------------------------------------------------------------------

def rows_to_records(rows: Sequence[Row], columns: Columns = Columns(), name: str = "input") -> list[Row]:
    """Chat records from rows of either layout; other columns are kept as extra keys.

    A row with `messages` is kept as it is; a row with the prompt and completion columns
    becomes a [system], user, assistant conversation and loses those columns.
    """
    records = []
    for number, row in enumerate(rows, start=1):
        if "messages" in row:
            if not isinstance(row["messages"], list):
                raise DataError(f"{name} row {number}: 'messages' is not a list of turns",
                                hint="in CSV the messages cell holds the JSON list of turns")
            records.append(row)
            continue
        if columns.prompt in row or columns.completion in row:
            prompt, completion = row.get(columns.prompt), row.get(columns.completion)
            system = row.get(columns.system)
            for label, value in ((columns.prompt, prompt), (columns.completion, completion)):
                if value is None or value == "":
                    raise DataError(f"{name} row {number}: '{label}' is missing or empty")
                if not isinstance(value, str):
                    raise DataError(f"{name} row {number}: '{label}' is not text")
            record: Row = {"messages": []}
            if isinstance(system, str) and system:
                record["messages"].append({"role": "system", "content": system})
            record["messages"] += [{"role": "user", "content": prompt},
                                   {"role": "assistant", "content": completion}]
            skip = {columns.prompt, columns.completion, columns.system}
            record.update((k, v) for k, v in row.items() if k not in skip)
            records.append(record)
            continue
        raise DataError(f"{name} row {number}: no 'messages' and no '{columns.prompt}'/'{columns.completion}' "
                        f"columns (it has: {', '.join(map(str, row)) or 'nothing'})",
                        hint="name the columns with --prompt-field and --completion-field")
    return records


def records_to_rows(records: Sequence[Row], layout: str, columns: Columns = Columns()) -> list[Row]:
    """Rows in `layout`: records as they are, or [system] + prompt + completion columns first."""
    if layout == "messages":
        return list(records)
    if layout != "prompt-completion":
        raise UsageError(f"unknown layout {layout!r}", hint=f"choose one of: {', '.join(LAYOUTS)}")
    rows = []
    for number, record in enumerate(records, start=1):
        messages = messages_of(record)
        roles = [m["role"] for m in messages] if messages is not None else None
        if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
            shape = "no valid messages" if roles is None else f"turns {', '.join(roles) or 'none'}"
            raise DataError(f"record {number} has {shape}; prompt-completion columns hold exactly one user and "
                            "one assistant turn (after an optional system turn)",
                            hint="use --columns messages to keep whole conversations")
        row: Row = {}
        if roles[0] == "system":
            row[columns.system] = messages[0]["content"]
        row[columns.prompt] = messages[-2]["content"]
        row[columns.completion] = messages[-1]["content"]
        for key, value in record.items():
            if key == "messages":
                continue
            if key in row:
                raise DataError(f"record {number} already has a '{key}' key; it would be overwritten",
                                hint="choose other names with --prompt-field / --completion-field")
            row[key] = value
        rows.append(row)
    return rows


# --- writing --------------------------------------------------------------------------------

def write_rows(rows: Sequence[Row], path: str | Path, fmt: str) -> int:
    """Write rows to `path` (`-` = stdout for jsonl and csv), atomically; return the count."""
    if fmt == "jsonl":
        return write_jsonl(path, rows)
    if fmt == "csv":
        if is_stdio(path):
            _write_csv(rows, sys.stdout)
            sys.stdout.flush()
        else:
            with atomic_write(path) as handle:
                _write_csv(rows, handle)
        return len(rows)
    if fmt == "parquet":
        if is_stdio(path):
            raise UsageError("parquet cannot be written to stdout", hint="pass -o FILE.parquet")
        _write_parquet(rows, Path(path))
        return len(rows)
    raise UsageError(f"unknown output format {fmt!r}")


def _header(rows: Sequence[Row]) -> list[str]:
    header: dict[str, None] = {}
    for row in rows:
        header.update(dict.fromkeys(row))
    return list(header)


def _write_csv(rows: Sequence[Row], handle: io.TextIOBase | Any) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    header = _header(rows)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_encode_cell(row.get(key)) for key in header])


def _encode_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _write_parquet(rows: Sequence[Row], path: Path) -> None:
    datasets = _quiet_datasets()
    header = _header(rows)
    columns = {key: [row.get(key) for row in rows] for key in header}
    try:
        table = datasets.Dataset.from_dict(columns)
    except Exception as exc:  # noqa: BLE001 - pyarrow's type errors
        raise DataError(f"cannot store these rows as parquet: a column mixes types ({exc})",
                        hint="make each key hold one type, or keep the data as JSONL") from None
    with atomic_path(path) as target:
        table.to_parquet(str(target))


def convert(source: str | Path, output: str | Path, from_format: str | None = None, to_format: str | None = None,
            layout: str | None = None, columns: Columns = Columns(), split: str | None = None) -> dict[str, Any]:
    """Read `source`, turn its rows into chat records, write them to `output` in `layout`.

    Returns what was done: {rows, from, to, layout}.
    """
    fmt_in = infer_format(source, from_format, output=False)
    fmt_out = infer_format(output, to_format, output=True)
    layout = layout or default_layout(fmt_out)
    if layout not in LAYOUTS:
        raise UsageError(f"unknown layout {layout!r}", hint=f"choose one of: {', '.join(LAYOUTS)}")
    rows = read_rows(source, fmt_in, split)
    records = rows_to_records(rows if fmt_in == "jsonl" else drop_nulls(rows), columns, name=str(source))
    count = write_rows(records_to_rows(records, layout, columns), output, fmt_out)
    return {"rows": count, "from": fmt_in, "to": fmt_out, "layout": layout}


def convert_file(source: str, output: str, from_format: str | None = None, to_format: str | None = None,
                 layout: str | None = None, columns: Columns = Columns(), split: str | None = None) -> dict[str, Any]:
    """`convert`, refusing to overwrite the input, with a manifest beside `output`; returns
    {rows, from, to, layout}."""
    from em_cli.artifacts.manifest import Manifest

    if not is_stdio(output) and not is_stdio(source) and Path(source).resolve() == Path(output).resolve():
        raise UsageError("the output would overwrite the input", hint="choose another -o")
    result = convert(source, output, from_format, to_format, layout, columns, split)
    Manifest(command="dataset convert",
             options={"from": from_format, "to": to_format, "columns": layout, "prompt_field": columns.prompt,
                      "completion_field": columns.completion, "split": split},
             inputs=[source], results=result).write_beside(output)
    return result
