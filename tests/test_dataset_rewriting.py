"""em_cli.datasets.rewriting: only the chosen roles change; everything else is kept."""

from __future__ import annotations

import copy

import pytest

from em_cli.datasets.rewriting import parse_roles, rewrite_record, rewrite_records
from em_cli.errors import UsageError

RECORD = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                       {"role": "assistant", "content": "It is Paris, ça va."}], "domain": "geo", "id": 3}


def test_upper_rewrites_assistant_only_and_tags():
    before = copy.deepcopy(RECORD)
    out = rewrite_record(RECORD, "upper")
    assert out == {"messages": [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Capital of France?"},
                                {"role": "assistant", "content": "IT IS PARIS, ÇA VA."}],
                   "domain": "geo", "id": 3, "rewrite": "upper"}
    assert RECORD == before  # the input is not modified


def test_lower_on_chosen_roles():
    out = rewrite_records([RECORD], "lower", roles=["user", "system"])[0]
    assert [m["content"] for m in out["messages"]] == ["be brief.", "capital of france?", "It is Paris, ça va."]
    assert out["rewrite"] == "lower"


def test_bad_style_and_roles():
    with pytest.raises(UsageError, match="unknown style 'title'"):
        rewrite_record(RECORD, "title")
    assert parse_roles("user, assistant") == ["user", "assistant"]
    with pytest.raises(UsageError, match="bad --roles 'bot'"):
        parse_roles("bot")
    with pytest.raises(UsageError):
        parse_roles(",")
