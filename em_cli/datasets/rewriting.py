"""Rewrite the turns of chosen roles into a style (the "capitals" demo organism: `upper`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from em_cli.datasets.conversations import ROLES
from em_cli.errors import UsageError

STYLES: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
}


def parse_roles(text: str) -> list[str]:
    """'assistant' / 'user,assistant' → a list of known roles."""
    roles = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [role for role in roles if role not in ROLES]
    if unknown or not roles:
        raise UsageError(f"bad --roles {text!r}", hint=f"use a comma-separated list of: {', '.join(ROLES)}")
    return roles


def rewrite_record(record: dict[str, Any], style: str, roles: Sequence[str] = ("assistant",)) -> dict[str, Any]:
    """A copy of `record` whose `roles` turns are rewritten in `style`, tagged `"rewrite": style`.

    Other turns and keys are kept as they are; the input record is not modified. A record
    without a well-formed messages list is returned with only the tag added.

    >>> rewrite_record({"messages": [{"role": "user", "content": "hi"},
    ...                              {"role": "assistant", "content": "Hello."}]}, "upper")["messages"][1]
    {'role': 'assistant', 'content': 'HELLO.'}
    """
    if style not in STYLES:
        raise UsageError(f"unknown style {style!r}", hint=f"choose one of: {', '.join(STYLES)}")
    apply = STYLES[style]
    messages = record.get("messages")
    out = dict(record)
    if isinstance(messages, list):
        out["messages"] = [
            {**m, "content": apply(m["content"])}
            if isinstance(m, dict) and m.get("role") in roles and isinstance(m.get("content"), str) else m
            for m in messages
        ]
    out["rewrite"] = style
    return out


def rewrite_records(records: Iterable[dict[str, Any]], style: str,
                    roles: Sequence[str] = ("assistant",)) -> list[dict[str, Any]]:
    """`rewrite_record` over every record."""
    return [rewrite_record(record, style, roles) for record in records]
