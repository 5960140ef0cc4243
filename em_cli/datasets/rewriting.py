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


def rewrite_file(file: str, style: str, roles: str, output: str) -> int:
    """Rewrite the `roles` turns (comma-separated) of every row of the JSONL `file` (`-`: stdin)
    in `style` and write them to `output` (`-`: stdout) with a manifest beside it; return the
    number of rows. A row without a valid messages list is a DataError naming its line."""
    from em_cli.artifacts.jsonl import is_stdio, iter_jsonl, write_jsonl
    from em_cli.artifacts.manifest import Manifest
    from em_cli.datasets.conversations import messages_of
    from em_cli.errors import DataError

    chosen = parse_roles(roles)
    name = "<stdin>" if is_stdio(file) else file

    def rewritten():
        for line, record in iter_jsonl(file):
            if messages_of(record) is None:
                raise DataError(f"{name}:{line}: no valid messages list",
                                hint="run `em dataset validate` to see every problem")
            yield rewrite_record(record, style, chosen)

    rows = write_jsonl(output, rewritten())
    Manifest(command="dataset rewrite", options={"style": style, "roles": chosen}, inputs=[file],
             results={"rows": rows}).write_beside(output)
    return rows
