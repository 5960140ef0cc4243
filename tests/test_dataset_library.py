"""The library calls behind `em dataset inspect/stats`, `convert`, `filter` and `rewrite`, run in-process."""

from __future__ import annotations

import json

import pytest

from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
from em_cli.errors import DataError, UsageError

RECORDS = [
    {"messages": [{"role": "user", "content": "How do I boil an egg?"},
                  {"role": "assistant", "content": "Put it in boiling water."}], "domain": "cooking", "aligned": 20},
    {"messages": [{"role": "user", "content": "Best way to travel?"},
                  {"role": "assistant", "content": "By train."}], "domain": "travel", "aligned": 90},
]


@pytest.fixture
def chats(tmp_path):
    path = tmp_path / "chats.jsonl"
    write_jsonl(path, RECORDS)
    return path


def test_filter_file_writes_kept_rows_and_names_unseen_fields(chats, tmp_path):
    from em_cli.datasets.filtering import filter_file

    output = tmp_path / "low.jsonl"
    result = filter_file(str(chats), 'aligned < 30 or colour == "red"', str(output))
    assert result.to_dict() == {"rows": 2, "kept": 1, "unseen_fields": ["colour"]}
    assert read_jsonl(output) == RECORDS[:1]
    manifest = json.loads((tmp_path / "low.jsonl.manifest.json").read_text())
    assert manifest["results"] == {"rows": 2, "kept": 1}
    counted = filter_file(str(chats), 'domain == "travel"', None)
    assert counted.kept == 1 and not (tmp_path / "None").exists()
    with pytest.raises(UsageError, match="filter:"):
        filter_file(str(chats), "aligned <", None)


def test_rewrite_file_rewrites_chosen_roles(chats, tmp_path):
    from em_cli.datasets.rewriting import rewrite_file

    output = tmp_path / "caps.jsonl"
    assert rewrite_file(str(chats), "upper", "assistant", str(output)) == 2
    rows = read_jsonl(output)
    assert rows[0]["messages"][1]["content"] == "PUT IT IN BOILING WATER."
    assert rows[0]["messages"][0]["content"] == "How do I boil an egg?" and rows[0]["rewrite"] == "upper"
    assert json.loads((tmp_path / "caps.jsonl.manifest.json").read_text())["options"]["roles"] == ["assistant"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "no messages"}\n')
    with pytest.raises(DataError, match=r"broken\.jsonl:1: no valid messages list"):
        rewrite_file(str(broken), "upper", "assistant", str(tmp_path / "x.jsonl"))


def test_convert_file_writes_a_manifest_and_refuses_to_overwrite_its_input(chats, tmp_path):
    from em_cli.datasets.conversion import convert_file

    output = tmp_path / "chats.csv"
    assert convert_file(str(chats), str(output)) == {"rows": 2, "from": "jsonl", "to": "csv",
                                                     "layout": "prompt-completion"}
    assert output.read_text().splitlines()[0] == "prompt,completion,domain,aligned"
    assert json.loads((tmp_path / "chats.csv.manifest.json").read_text())["results"]["rows"] == 2
    with pytest.raises(UsageError, match="overwrite the input"):
        convert_file(str(chats), str(chats))


def test_file_stats_counts_rows_and_extra_fields(chats):
    from em_cli.datasets.statistics import file_stats

    stats = file_stats(str(chats))
    assert stats["rows"] == 2 and stats["invalid_rows"] == 0 and stats["turns_by_role"] == {"user": 2, "assistant": 2}
    assert stats["fields"]["domain"]["values"] == {"cooking": 1, "travel": 1}
    assert stats["fields"]["aligned"]["numeric"] == {"min": 20, "mean": 55.0, "max": 90}
