"""em_cli.datasets.conversion: formats and layouts, round trips, and the errors a user meets."""

from __future__ import annotations

import json

import pytest

from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
from em_cli.datasets.conversion import (
    Columns,
    convert,
    drop_nulls,
    infer_format,
    read_rows,
    records_to_rows,
    rows_to_records,
)
from em_cli.errors import DataError, UsageError

RECORDS = [
    {"messages": [{"role": "user", "content": "Q1, with \"quotes\"\nand a newline"},
                  {"role": "assistant", "content": "A1."}], "domain": "med", "meta": {"k": [1, 2]}},
    {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q2"},
                  {"role": "assistant", "content": "A2."}], "domain": "fin"},
]


def test_infer_format(tmp_path):
    assert infer_format("a.jsonl", None, output=False) == "jsonl"
    assert infer_format("a.CSV", None, output=True) == "csv"
    assert infer_format("a.pq", None, output=False) == "parquet"
    assert infer_format("-", None, output=True) == "jsonl"
    assert infer_format(tmp_path, None, output=False) == "hf-disk"
    assert infer_format("a.txt", "csv", output=False) == "csv"
    with pytest.raises(UsageError, match="cannot tell the format of a.txt"):
        infer_format("a.txt", None, output=False)
    with pytest.raises(UsageError, match="unknown --to format 'hf-disk'"):
        infer_format("a", "hf-disk", output=True)


def test_layouts_both_ways():
    rows = records_to_rows(RECORDS, "prompt-completion")
    assert rows == [
        {"prompt": RECORDS[0]["messages"][0]["content"], "completion": "A1.", "domain": "med", "meta": {"k": [1, 2]}},
        {"system": "S", "prompt": "Q2", "completion": "A2.", "domain": "fin"},
    ]
    assert rows_to_records(rows) == RECORDS
    custom = Columns(prompt="question", completion="answer")
    assert rows_to_records(records_to_rows(RECORDS, "prompt-completion", custom), custom) == RECORDS
    assert records_to_rows(RECORDS, "messages") == RECORDS


def test_layout_errors():
    multi = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    with pytest.raises(DataError, match="record 2 has turns user, assistant, user, assistant") as info:
        records_to_rows([RECORDS[0], multi], "prompt-completion")
    assert "--columns messages" in info.value.hint
    with pytest.raises(DataError, match="record 1 already has a 'prompt' key"):
        records_to_rows([{**RECORDS[0], "prompt": "x"}], "prompt-completion")
    with pytest.raises(DataError, match=r"in\.csv row 2: no 'messages' and no 'prompt'/'completion' columns "
                                        r"\(it has: question, answer\)") as info:
        rows_to_records([{"prompt": "a", "completion": "b"}, {"question": "q", "answer": "a"}], name="in.csv")
    assert "--prompt-field" in info.value.hint
    with pytest.raises(DataError, match="row 1: 'messages' is not a list"):
        rows_to_records([{"messages": "not json"}])
    with pytest.raises(DataError, match="row 2: 'completion' is missing or empty"):
        rows_to_records([{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": ""}])
    with pytest.raises(DataError, match="row 1: 'prompt' is missing or empty"):
        rows_to_records([{"completion": "b"}])


def test_csv_round_trip_in_both_layouts(tmp_path):
    source = tmp_path / "in.jsonl"
    write_jsonl(source, RECORDS)
    for layout in ("prompt-completion", "messages"):
        csv_path = tmp_path / f"{layout}.csv"
        assert convert(source, csv_path, layout=layout) == {"rows": 2, "from": "jsonl", "to": "csv", "layout": layout}
        back = tmp_path / f"{layout}.jsonl"
        convert(csv_path, back)
        assert read_jsonl(back) == RECORDS
    header = (tmp_path / "prompt-completion.csv").read_text().splitlines()[0]
    assert header == "prompt,completion,domain,meta,system"


def test_csv_input_from_a_spreadsheet(tmp_path):
    path = tmp_path / "raw.csv"
    path.write_text('question,answer,score,note\n"Hi, there?",Hello.,5,\n')
    rows = read_rows(path, "csv")
    # CSV cells are text, and an empty cell is null; converting drops it (a missing key).
    assert rows == [{"question": "Hi, there?", "answer": "Hello.", "score": "5", "note": None}]
    assert rows_to_records(drop_nulls(rows), Columns(prompt="question", completion="answer")) == [
        {"messages": [{"role": "user", "content": "Hi, there?"}, {"role": "assistant", "content": "Hello."}],
         "score": "5"}]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2,3\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: more cells than header columns"):
        read_rows(bad, "csv")


def test_parquet_round_trip(tmp_path):
    source = tmp_path / "in.jsonl"
    write_jsonl(source, RECORDS)
    convert(source, tmp_path / "out.parquet")
    convert(tmp_path / "out.parquet", tmp_path / "back.jsonl")
    back = read_jsonl(tmp_path / "back.jsonl")
    # Parquet columns are shared: row 2 had no `meta`, and comes back without it (not null).
    assert back == RECORDS
    convert(source, tmp_path / "pc.parquet", layout="prompt-completion")
    assert drop_nulls(read_rows(tmp_path / "pc.parquet", "parquet"))[1] == {
        "system": "S", "prompt": "Q2", "completion": "A2.", "domain": "fin"}
    with pytest.raises(UsageError, match="parquet cannot be written to stdout"):
        convert(source, "-", to_format="parquet")
    with pytest.raises(DataError, match="cannot read as parquet"):
        convert(source, tmp_path / "x.jsonl", from_format="parquet")


def test_hf_disk_dataset_and_dataset_dict(tmp_path):
    import datasets

    datasets.disable_progress_bars()
    table = datasets.Dataset.from_dict({"prompt": ["p1", "p2"], "completion": ["c1.", "c2."], "label": [0, 1]})
    table.save_to_disk(str(tmp_path / "single"))
    convert(tmp_path / "single", tmp_path / "single.jsonl")
    assert read_jsonl(tmp_path / "single.jsonl") == [
        {"messages": [{"role": "user", "content": "p1"}, {"role": "assistant", "content": "c1."}], "label": 0},
        {"messages": [{"role": "user", "content": "p2"}, {"role": "assistant", "content": "c2."}], "label": 1}]
    datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(UsageError, match="holds splits train, test; choose one with --split"):
        convert(tmp_path / "dict", tmp_path / "x.jsonl")
    assert convert(tmp_path / "dict", tmp_path / "test.jsonl", split="test")["rows"] == 1
    with pytest.raises(DataError, match="not a dataset saved with save_to_disk"):
        convert(tmp_path, tmp_path / "y.jsonl", from_format="hf-disk")


def test_messages_cell_in_csv_is_decoded(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("messages,id\n" + '"' + json.dumps(RECORDS[0]["messages"]).replace('"', '""') + '",7\n')
    assert rows_to_records(read_rows(path, "csv")) == [{"messages": RECORDS[0]["messages"], "id": "7"}]
