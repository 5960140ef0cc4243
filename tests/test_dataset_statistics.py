"""em_cli.datasets.statistics: exact numbers on a small hand-made dataset."""

from __future__ import annotations

from em_cli.datasets.statistics import dataset_stats, summarize


def chat(user: str, assistant: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}


RECORDS = [
    chat("ab", "abcd", domain="cooking", score=10, flagged=True),
    chat("abcdef", "ab", domain="travel", score=30, flagged=False),
    chat("ab", "abcd", domain="cooking", note="x" * 50),
    {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "a"},
                  {"role": "assistant", "content": "b"}], "domain": None},
    {"no_messages": 1},
]


def test_summarize():
    assert summarize([]) is None
    assert summarize([1, 2, 4]) == {"min": 1, "mean": 2.33, "max": 4}


def test_dataset_stats_exact():
    stats = dataset_stats(RECORDS)
    assert stats["rows"] == 5
    assert stats["invalid_rows"] == 1
    assert stats["duplicates"] == 1
    assert stats["turns"] == {"min": 2, "mean": 2.25, "max": 3}
    assert stats["turns_by_role"] == {"system": 1, "user": 4, "assistant": 4}
    assert stats["chars"]["user"] == {"min": 1, "mean": 2.75, "max": 6}
    assert stats["chars"]["assistant"] == {"min": 1, "mean": 2.75, "max": 4}
    assert "tokens" not in stats
    fields = stats["fields"]
    assert fields["domain"] == {"present": 4, "null": 1, "distinct": 2, "values": {"cooking": 2, "travel": 1}}
    assert fields["score"] == {"present": 2, "numeric": {"min": 10, "mean": 20.0, "max": 30}}
    assert fields["flagged"] == {"present": 2, "values": {"false": 1, "true": 1}}
    assert fields["note"] == {"present": 1, "distinct": 1}  # too long to count values
    assert fields["no_messages"] == {"present": 1, "numeric": {"min": 1, "mean": 1.0, "max": 1}}


def test_token_stats_with_a_tokenizer():
    from tiny_models import LLAMA3_TEMPLATE, build_tokenizer

    tokenizer = build_tokenizer(LLAMA3_TEMPLATE, "<|eot_id|>")
    stats = dataset_stats(RECORDS[:2], tokenizer)
    counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in ("ab", "abcdef")]
    assert stats["tokens"]["user"] == summarize(counts)
    conversation = [len(tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False),
                                  add_special_tokens=False)["input_ids"]) for r in RECORDS[:2]]
    assert stats["tokens"]["conversation"] == summarize(conversation)
    assert stats["tokens"]["conversation"]["min"] > stats["tokens"]["user"]["max"]
    tokenizer.chat_template = None
    assert "conversation" not in dataset_stats(RECORDS[:2], tokenizer)["tokens"]
