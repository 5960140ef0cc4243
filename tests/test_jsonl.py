from __future__ import annotations

import json

import pytest

from em_cli.artifacts.jsonl import ResumableJsonl, iter_jsonl, read_jsonl, write_jsonl
from em_cli.errors import DataError


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: invalid JSON"):
        read_jsonl(path)


def test_non_object_line_is_an_error(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"list\.jsonl:2: expected a JSON object"):
        read_jsonl(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_unknown_keys_survive_round_trip(tmp_path):
    records = [{"messages": [], "x-custom": {"nested": [1, 2]}, "ünï": "cødé"}]
    write_jsonl(tmp_path / "out.jsonl", records)
    assert read_jsonl(tmp_path / "out.jsonl") == records
    numbers = [n for n, _ in iter_jsonl(tmp_path / "out.jsonl")]
    assert numbers == [1]


def test_write_is_atomic_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text('{"old": true}\n')

    def records():
        yield {"new": 1}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(target, records())
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_resumable_output_drops_torn_tail_and_finishes(tmp_path):
    target = tmp_path / "out.jsonl"
    with ResumableJsonl(target) as out:
        out.append({"i": 0})
        out.append({"i": 1})
    # Simulate a kill mid-write: a torn last line in the partial file.
    partial = tmp_path / "out.jsonl.partial"
    partial.write_text(partial.read_text() + '{"i": 2, "tex')
    assert not target.exists()
    resumed = ResumableJsonl(target)
    assert resumed.existing == [{"i": 0}, {"i": 1}]
    with resumed as out:
        out.append({"i": 2})
        out.finish()
    assert not partial.exists()
    assert [json.loads(line)["i"] for line in target.read_text().splitlines()] == [0, 1, 2]


def test_resumable_output_extends_a_finished_file(tmp_path):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"i": 0}])
    resumed = ResumableJsonl(target)
    assert resumed.existing == [{"i": 0}]
    with resumed as out:
        out.append({"i": 1})
    # Not finished: the final file still holds the old complete content.
    assert read_jsonl(target) == [{"i": 0}]
