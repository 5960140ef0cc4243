"""em_cli.expressions: the filter language, its missing-value rules and its errors."""

from __future__ import annotations

import pytest

from em_cli.expressions import MISSING, ExpressionError, compile_expression, get_path, tokenize
from em_cli.errors import UsageError

RECORD = {
    "aligned": 12.5,
    "scores": {"aligned": 20, "coherent": 80, "label": "bad"},
    "domain": "cooking",
    "response": "The capital is Paris.",
    "tags": ["a", "b"],
    "flag": True,
    "zero": 0,
    "nothing": None,
    "messages": [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Paris."}],
    "flat.key": 7,
    "x-custom": "yes",
}


def check(text: str, record: dict = RECORD) -> bool:
    return compile_expression(text)(record)


@pytest.mark.parametrize("text, expected", [
    ("aligned < 30", True),
    ("aligned >= 12.5", True),
    ("aligned > 12.5", False),
    ("scores.aligned <= 20 and scores.coherent > 50", True),
    ("scores.aligned < 10 or scores.coherent > 90", False),
    ("not scores.aligned < 10", True),
    ("not (scores.aligned < 30 and domain == 'cooking')", False),
    ("domain == \"cooking\"", True),
    ("domain != 'travel'", True),
    ("domain in [\"cooking\", \"travel\"]", True),
    ("domain in ['travel']", False),
    ("domain not in ['travel']", True),
    ("response contains \"Paris\"", True),
    ("response contains 'paris'", False),
    ("'Paris' in response", True),
    ("tags contains 'b'", True),
    ("'c' in tags", False),
    ("'aligned' in scores", True),
    ("messages.1.content == 'Paris.'", True),
    ("messages.-1.role == 'assistant'", True),
    ("messages.5.role == 'assistant'", False),
    ("flat.key == 7", True),
    ("x-custom == 'yes'", True),
    ("flag", True),
    ("flag == true", True),
    ("flag == 1", False),
    ("zero", False),
    ("zero == false", False),
    ("scores.label < 'c'", True),
    ("scores.aligned < 'c'", False),
    ("scores.aligned == '20'", False),
    ("scores.aligned == 20.0", True),
    ("1e1 < scores.aligned", True),
    ("-5 < 0", True),
    ("true and (false or true)", True),
    ("a or b and c", False),
    ("aligned < 30 or missing > 1", True),
])
def test_semantics(text, expected):
    assert check(text) is expected


@pytest.mark.parametrize("text", [
    "missing < 1", "missing > 1", "missing == 1", "missing != 1", "missing in [1]", "missing not in [1]",
    "missing contains 'a'", "nothing == 1", "nothing != 1", "nothing < 1", "'a' in nothing",
    "scores.missing < 1", "domain.sub == 1", "missing", "nothing",
])
def test_missing_or_null_makes_a_comparison_false(text):
    assert check(text) is False


def test_null_literal_tests_presence():
    assert check("missing == null") and check("nothing == null") and check("null == missing")
    assert not check("domain == null")
    assert check("domain != null") and not check("missing != null") and not check("nothing != null")
    assert check("not missing == 1")


def test_never_raises_on_odd_records():
    keep = compile_expression("a.b.c < 1 or 'x' in a or a contains 1 or a.0 == 2")
    for record in ({}, {"a": 5}, {"a": [1, 2]}, {"a": {"b": "s"}}, {"a": None}, {"a": {"b": [1]}}):
        assert keep(record) in (True, False)
    assert keep({"a": [2]}) is True
    assert keep([]) is False  # not even a dict


def test_get_path():
    assert get_path(RECORD, "scores.coherent") == 80
    assert get_path(RECORD, "flat.key") == 7
    assert get_path(RECORD, "tags.0") == "a"
    assert get_path(RECORD, "tags.x") is MISSING
    assert get_path(RECORD, "nope.deeper") is MISSING


def test_fields_lists_what_the_expression_reads():
    assert compile_expression("a.b < 1 and c in [d, 2]").fields == ["a.b", "c", "d"]


def test_strings_with_escapes():
    assert check("s == 'it\\'s \"ok\"'", {"s": "it's \"ok\""})
    assert check('s == "tab\\tnew\\nline"', {"s": "tab\tnew\nline"})
    assert [t.kind for t in tokenize("a <= 'x' and not b")] == ["name", "op", "string", "keyword", "keyword",
                                                                "name", "end"]


@pytest.mark.parametrize("text, message", [
    ("scores.aligned < )", "unexpected token ')' at column 18"),
    ("(a < 1))", "unexpected token ')' at column 8"),
    ("a ==", "unexpected end of expression at column 5"),
    ("(a < 1", "unexpected end of expression at column 7"),
    ("a = 1", "unexpected character '=' (did you mean ==?) at column 3"),
    ("a < 1 && b", "unexpected character '&' at column 7"),
    ("a == 'open", "unterminated string at column 6"),
    ("", "empty expression at column 1"),
    ("   ", "empty expression at column 1"),
    ("a b", "unexpected token 'b' at column 3"),
    ("a in [1 2]", "unexpected token '2' at column 9"),
    ("1 < 2 < 3", "unexpected token '<' at column 7"),
    ("x == 12abc", "bad number '12a' at column 6"),
    ("and a", "unexpected token 'and' at column 1"),
    ("__import__('os').system('ls')", "unexpected token '(' at column 11"),
])
def test_syntax_errors_name_the_column(text, message):
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert str(info.value) == message
    assert isinstance(info.value, UsageError)
    assert info.value.column == int(message.rsplit(" ", 1)[1])


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ExpressionError, match="nested too deeply"):
        compile_expression("not " * 500 + "a")
    with pytest.raises(ExpressionError, match="nested too deeply"):
        compile_expression("(" * 500 + "a" + ")" * 500)
    assert check("not not not a", {"a": False})
    assert not check("not not not not a", {"a": False})
