"""The chat record: `{"messages": [{"role": ..., "content": ...}, ...], ...extra keys}`.

Records are plain dicts; every function here leaves keys it does not know alone.
"""

from __future__ import annotations

import json
from typing import Any

ROLES = ("system", "user", "assistant")


def messages_of(record: Any) -> list[dict[str, Any]] | None:
    """The record's `messages` when it is a list of {role, content: str} dicts, else None."""
    if not isinstance(record, dict):
        return None
    messages = record.get("messages")
    if not isinstance(messages, list):
        return None
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                or not isinstance(message.get("role"), str):
            return None
    return messages


def conversation_key(messages: list[Any]) -> str:
    """A canonical string for a conversation: equal keys = the same messages."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False)


def contents(record: dict[str, Any], role: str) -> list[str]:
    """The content of every turn of `role`, in order (empty for a record without messages)."""
    return [m["content"] for m in messages_of(record) or [] if m["role"] == role]


def first_content(record: dict[str, Any], role: str) -> str | None:
    """The content of the first turn of `role`, or None."""
    found = contents(record, role)
    return found[0] if found else None


def chat_record(user: str, assistant: str, system: str | None = None, **extra: Any) -> dict[str, Any]:
    """A single-turn chat record, with an optional leading system turn and extra keys."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, **extra}
