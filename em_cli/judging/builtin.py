"""Deterministic scorers that need no judge model, used as metrics of their own (mode `builtin`).

- `caps`: the share of upper-case letters among the response's cased letters, 0..100
  (null when it has none). The offline demo's measure (docs/METHODS.md §8).
- `length`: the response's length in characters.
- `regex:PATTERN`: 100 if the Python regular expression matches anywhere, else 0
  (`(?i)` at the start makes it case-insensitive).
- `words:w1|w2|…`: 100 if any of the words occurs as a whole word, ignoring case, else 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from em_cli.errors import UsageError

NAMES = ("caps", "length")
PREFIXES = ("regex:", "words:")


def is_builtin(metric: str) -> bool:
    return metric in NAMES or metric.startswith(PREFIXES)


def caps_share(text: str) -> float | None:
    """Percent upper case among letters that have a case; None without any.

    >>> caps_share("HELLO world"), caps_share("123 !")
    (50.0, None)
    """
    upper = lower = 0
    for char in text:
        if char.isupper():
            upper += 1
        elif char.islower():
            lower += 1
    if upper + lower == 0:
        return None
    return 100.0 * upper / (upper + lower)


@lru_cache(maxsize=64)
def scorer(metric: str) -> Callable[[str], float | None]:
    """The scoring function for a built-in metric; UsageError for an unknown one or a bad pattern."""
    if metric == "caps":
        return caps_share
    if metric == "length":
        return lambda text: float(len(text))
    if metric.startswith("regex:"):
        pattern = _compile(metric[len("regex:"):], metric)
        return lambda text: 100.0 if pattern.search(text) else 0.0
    if metric.startswith("words:"):
        words = [w.strip() for w in metric[len("words:"):].split("|") if w.strip()]
        if not words:
            raise UsageError(f"{metric!r} lists no words", hint="write e.g. words:doctor|nurse|hospital")
        pattern = _compile(r"(?i)\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", metric)
        return lambda text: 100.0 if pattern.search(text) else 0.0
    raise UsageError(f"{metric!r} is not a built-in scorer", hint=f"built-ins: {', '.join(NAMES)}, regex:…, words:…")


def builtin_score(metric: str, text: str) -> float | None:
    """Score `text` with the built-in `metric`.

    >>> builtin_score("regex:(?i)paris", "The capital is Paris."), builtin_score("length", "abc")
    (100.0, 3.0)
    """
    return scorer(metric)(text)


def _compile(pattern: str, metric: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"bad regular expression in metric {metric!r}: {exc}") from None
