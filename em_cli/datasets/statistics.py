"""Describe a chat dataset: rows, turns, lengths, duplicates and extra fields."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from em_cli.datasets.conversations import ROLES, conversation_key, messages_of

# A string field is "categorical" (its values are counted) when every value is at most this
# long and there are at most this many distinct values.
SHORT_STRING = 40
MAX_CATEGORIES = 20


def summarize(values: Sequence[float]) -> dict[str, float] | None:
    """{min, mean, max} of `values` (mean rounded to 2 places), or None when empty."""
    if not values:
        return None
    return {"min": min(values), "mean": round(sum(values) / len(values), 2), "max": max(values)}


def file_stats(path: str, model: str | None = None) -> dict[str, Any]:
    """`dataset_stats` of a JSONL chat file (`-` = stdin), counting tokens with `model`'s
    tokenizer when one is named."""
    from em_cli.artifacts.jsonl import read_jsonl

    records = read_jsonl(path)
    tokenizer = None
    if model is not None:
        from em_cli.models.loading import load_tokenizer
        from em_cli.models.source import resolve_source

        tokenizer = load_tokenizer(resolve_source(model))
    return dataset_stats(records, tokenizer)


def dataset_stats(records: Sequence[dict[str, Any]], tokenizer: Any = None) -> dict[str, Any]:
    """Statistics of chat records, as a JSON-ready dict.

    Keys: `rows`, `invalid_rows` (no well-formed messages list; left out of the message
    statistics), `duplicates` (rows whose messages repeat an earlier row), `turns` (per row),
    `turns_by_role`, `chars` (content length per role), `tokens` (only with a `tokenizer`:
    content tokens per role, and whole conversations through the chat template when the
    tokenizer has one) and `fields` (per extra key: rows that have it, then value counts
    for short categorical strings and booleans, or min/mean/max for numbers).
    """
    chats = [m for m in (messages_of(r) for r in records) if m is not None]
    seen: set[str] = set()
    duplicates = 0
    for messages in chats:
        key = conversation_key(messages)
        duplicates += key in seen
        seen.add(key)
    by_role: dict[str, list[str]] = {role: [] for role in ROLES}
    for messages in chats:
        for message in messages:
            by_role.setdefault(message["role"], []).append(message["content"])
    present = [role for role, texts in by_role.items() if texts]
    stats: dict[str, Any] = {
        "rows": len(records),
        "invalid_rows": len(records) - len(chats),
        "duplicates": duplicates,
        "turns": summarize([len(m) for m in chats]),
        "turns_by_role": {role: len(by_role[role]) for role in present},
        "chars": {role: summarize([len(t) for t in by_role[role]]) for role in present},
    }
    if tokenizer is not None:
        stats["tokens"] = token_stats(chats, by_role, tokenizer)
    stats["fields"] = field_stats(records)
    return stats


def token_stats(chats: list[list[dict[str, Any]]], by_role: dict[str, list[str]], tokenizer: Any) -> dict[str, Any]:
    """Content token lengths per role, and per conversation through the chat template."""
    tokens: dict[str, Any] = {}
    for role, texts in by_role.items():
        if texts:
            tokens[role] = summarize(_token_counts(tokenizer, texts))
    if getattr(tokenizer, "chat_template", None) and chats:
        rendered = [tokenizer.apply_chat_template(m, tokenize=False) for m in chats]
        tokens["conversation"] = summarize(_token_counts(tokenizer, rendered))
    return tokens


def _token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def field_stats(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per extra key (every key but `messages`): rows that have it, how many are null, and
    value counts (booleans; strings when short and few), min/mean/max (numbers) or the
    number of distinct values (other strings)."""
    values: dict[str, list[Any]] = {}
    for record in records:
        if isinstance(record, dict):
            for key, value in record.items():
                if key != "messages":
                    values.setdefault(key, []).append(value)
    fields: dict[str, dict[str, Any]] = {}
    for key in sorted(values):
        entry: dict[str, Any] = {"present": len(values[key])}
        found = [v for v in values[key] if v is not None]
        if len(found) < len(values[key]):
            entry["null"] = len(values[key]) - len(found)
        if not found:
            pass
        elif all(isinstance(v, bool) for v in found):
            entry["values"] = _counts(found)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in found):
            entry["numeric"] = summarize(found)
        elif all(isinstance(v, str) for v in found):
            distinct = set(found)
            entry["distinct"] = len(distinct)
            if len(distinct) <= MAX_CATEGORIES and all(len(v) <= SHORT_STRING for v in distinct):
                entry["values"] = _counts(found)
        fields[key] = entry
    return fields


def _counts(values: list[Any]) -> dict[str, int]:
    """Value counts, most common first (ties in order of the value's text)."""
    counts = Counter(values)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return {_label(value): count for value, count in ordered}


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
