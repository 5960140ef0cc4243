"""em_cli.datasets.validation: every problem, with file and line, and nothing else."""

from __future__ import annotations

import json

from em_cli.datasets.validation import check_record, validate_file, validate_lines

GOOD = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}


def lines(*records) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in records]


def test_good_record_has_no_problems():
    assert check_record(GOOD) == []
    assert check_record({**GOOD, "domain": "x", "messages": [{"role": "system", "content": "Be nice."}]
                         + GOOD["messages"]}) == []


def test_each_schema_problem_is_named():
    assert check_record([1]) == ["expected a JSON object, got array"]
    assert check_record({"msgs": []}) == ["missing 'messages'"]
    assert check_record({"messages": "hi"}) == ["'messages' must be a list, got string"]
    assert check_record({"messages": []}) == ["'messages' is empty"]
    assert check_record({"messages": [{"role": "user", "content": "q"}]}) == [
        "no assistant turn", "last turn is user, expected assistant"]
    assert check_record({"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}) == [
        "messages[0]: unknown role 'bot' (expected one of system, user, assistant)", "no user turn"]
    assert check_record({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                                      {"role": "assistant", "content": "a"}]}) == ["messages[1]: system turn not first"]
    assert check_record({"messages": [{"role": "user"}, {"content": "a"}, "x"]}) == [
        "messages[0]: missing 'content'", "messages[1]: missing 'role'",
        "messages[2]: expected an object with role and content, got string", "no assistant turn"]
    assert check_record({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": " \n\t"}]}) == [
        "messages[0]: 'content' must be a string, got number", "messages[1]: empty content"]


def test_problems_carry_line_numbers_and_validation_goes_on_after_bad_json():
    report = validate_lines(lines(GOOD, "", '{"messages": [', "[1, 2]",
                                  {"messages": [{"role": "assistant", "content": "a"}]}, GOOD), "d.jsonl")
    assert [str(p) for p in report.problems] == [
        "d.jsonl:3: invalid JSON (Expecting value at column 15)",
        "d.jsonl:4: expected a JSON object, got array",
        "d.jsonl:5: no user turn",
        "d.jsonl:6: duplicate conversation (same messages as line 1)",
    ]
    assert report.rows == 5  # the blank line is not a row
    assert report.bad_rows == 4


def test_duplicates_ignore_extra_keys_but_not_content():
    other = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}]}
    report = validate_lines(lines(GOOD, other, {**GOOD, "domain": "x"}), "f")
    assert [str(p) for p in report.problems] == ["f:3: duplicate conversation (same messages as line 1)"]


def test_file_level_problems_and_bad_utf8(tmp_path):
    assert [str(p) for p in validate_file(tmp_path / "nope.jsonl").problems] == [f"{tmp_path / 'nope.jsonl'}: file not found"]
    path = tmp_path / "bin.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    assert [str(p) for p in validate_file(path).problems] == [f"{path}:2: not UTF-8 text (invalid start byte)"]
