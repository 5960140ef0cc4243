"""YAML documents `em` reads (question sets, judge prompts, dataset specs): parsed safely, with
a syntax error reported as one DataError naming the file and line."""

from __future__ import annotations

from typing import Any

from em_cli.errors import DataError


def parse_yaml(text: str, where: str) -> Any:
    """The document in `text` (safe loader: plain data only); `where` names it in errors."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"{where}: invalid YAML{line} ({getattr(exc, 'problem', None) or exc})") from None
