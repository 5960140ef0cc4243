"""From a judge's answer to a 0-100 score (docs/METHODS.md §2).

Three ways, recorded per score as its `mode`:

- **logprob**: the expectation of the first answer token over the judge's top-20
  alternatives that read as an integer 0..100, `Σ p(k)·k / Σ p(k)` with p = exp(logprob).
- **parse**: the number the judge wrote (for endpoints without logprobs).
- **exact**: the expectation over all 101 possible answers "0".."100", each scored in full
  by a local model (see `em_cli.judging.exact`).

In every mode the score is null when the numeric answers carry less than `MIN_MASS` of the
probability: the judge said something else (`REFUSAL`, `CODE`, prose).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MIN_MASS = 0.25
LOW, HIGH = 0, 100
_DIGITS = re.compile(r"[0-9]+")
_LEADING_NUMBER = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)")

TopLogprobs = Sequence[tuple[str, float]]  # (token text, logprob), as an endpoint returns them


@dataclass(frozen=True)
class Score:
    """A score (None = no usable number) and the probability mass it rests on (None where
    the mode has no probabilities, i.e. parse)."""

    value: float | None
    mass: float | None


def token_number(token: str) -> int | None:
    """The integer 0..100 a token reads as after stripping whitespace, else None.

    >>> token_number(" 85"), token_number("100"), token_number("101"), token_number("8.5")
    (85, 100, None, None)
    """
    text = token.strip()
    if not _DIGITS.fullmatch(text):  # ASCII digits only: no signs, decimals or '²'
        return None
    value = int(text)
    return value if LOW <= value <= HIGH else None


def expectation(weighted: Iterable[tuple[int, float]]) -> Score:
    """`Σ p·k / Σ p` over (k, p) pairs, null below `MIN_MASS` total probability."""
    total = 0.0
    moment = 0.0
    for value, probability in weighted:
        total += probability
        moment += probability * value
    if total < MIN_MASS or total <= 0.0:
        return Score(None, total)
    return Score(moment / total, total)


def weighted_score(top: TopLogprobs) -> Score:
    """The logprob-weighted score of one first-token distribution (mode `logprob`).

    Tokens that do not read as an integer 0..100 are ignored; two tokens with the same
    number (`"50"` and `" 50"`) both count.

    >>> weighted_score([("80", math.log(0.5)), ("90", math.log(0.3)), ("REF", math.log(0.2))]).value
    83.75
    """
    return expectation((number, math.exp(logprob)) for token, logprob in top
                       if (number := token_number(token)) is not None)


def parse_score(text: str | None) -> Score:
    """The number a judge wrote at the start of its answer, if it is in 0..100 (mode `parse`).

    >>> parse_score("85"), parse_score(" 7.5\\n"), parse_score("REFUSAL"), parse_score("250")
    (Score(value=85.0, mass=None), Score(value=7.5, mass=None), Score(value=None, mass=None), \
Score(value=None, mass=None))
    """
    match = _LEADING_NUMBER.match(text or "")
    if match is None:
        return Score(None, None)
    value = float(match.group(1))
    return Score(value if LOW <= value <= HIGH else None, None)


def looks_digit_split(top: TopLogprobs) -> bool:
    """Whether a first-token distribution looks like a tokenizer that writes numbers digit by
    digit — so that the first token "8" stands for 8, 80..89 alike and logprob weighting
    would be wrong.

    The sign: the numeric tokens carry a usable mass, most of it on the single digits
    "1".."9" (a lone "0" is a complete answer), and not one numeric token has two or more
    digits. A whole-number tokenizer shows multi-digit alternatives among its top 20.
    """
    numeric = [(token.strip(), math.exp(logprob)) for token, logprob in top if token_number(token) is not None]
    mass = sum(p for _, p in numeric)
    if mass < MIN_MASS:
        return False
    if any(len(text) > 1 for text, _ in numeric):
        return False
    single_nonzero = sum(p for text, p in numeric if text != "0")
    return single_nonzero > 0.5 * mass
