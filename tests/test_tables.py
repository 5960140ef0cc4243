"""em_cli.artifacts.tables: the one CSV reader, and the two paths that use it."""

from __future__ import annotations

import pytest

from em_cli.artifacts.tables import read_csv, read_records
from em_cli.datasets.conversion import convert, read_rows
from em_cli.errors import DataError

# A spreadsheet export: byte-order mark, CRLF, a quoted comma, an empty and a blank cell, a JSON cell.
SPREADSHEET = ("\ufeffquestion,response,domain,judge,note\r\n"
               '"Hi, there?",Hello.,cooking,"{""model"": ""m""}",\r\n'
               "Why?,Because.,,[1],   \r\n")
EXPECTED = [
    {"question": "Hi, there?", "response": "Hello.", "domain": "cooking", "judge": {"model": "m"}, "note": None},
    {"question": "Why?", "response": "Because.", "domain": None, "judge": [1], "note": None},
]


def test_judged_and_dataset_paths_read_a_csv_identically(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(SPREADSHEET.encode("utf-8"))
    assert read_csv(path) == EXPECTED
    # `em judge summary` / `em compare runs` and `em dataset convert` see the same rows.
    assert read_records(path) == EXPECTED
    assert read_rows(path, "csv") == EXPECTED


def test_bom_on_stdin_is_not_part_of_the_first_column(tmp_path, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(SPREADSHEET))
    assert read_csv("-") == EXPECTED


def test_only_the_judged_path_types_numbers(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("question_id,aligned,coherent\n7,12.5,\n")
    assert read_records(path) == [{"question_id": "7", "aligned": 12.5, "coherent": None}]
    assert read_rows(path, "csv") == [{"question_id": "7", "aligned": "12.5", "coherent": None}]


def test_converting_a_csv_drops_null_cells(tmp_path):
    from em_cli.artifacts.jsonl import read_jsonl

    path = tmp_path / "pc.csv"
    path.write_text("prompt,completion,note\nQ,A.,\n")
    convert(path, tmp_path / "out.jsonl")
    assert read_jsonl(tmp_path / "out.jsonl") == [
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A."}]}]


def test_csv_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty CSV"):
        read_csv(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_rows(latin, "csv")
    with pytest.raises(DataError, match="file not found"):
        read_csv(tmp_path / "missing.csv")
