"""Seeded split, sample and mix of record lists.

All three are deterministic in the seed: the same input and seed give the same output.
Counts are shared out by the largest-remainder method, so they always add up exactly.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from em_cli.errors import DataError, UsageError

Record = dict[str, Any]
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
SUM_TOLERANCE = 1e-6


def allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Share `total` items among `weights` in proportion; the counts sum to `total`.

    Each share gets the floor of its quota; the items left over go to the largest
    remainders (earlier weights first on ties).

    >>> allocate(10, [1, 1, 1])
    [4, 3, 3]
    """
    exact = [Fraction(str(w)) for w in weights]
    whole = sum(exact)
    quotas = [total * w / whole for w in exact]
    counts = [math.floor(q) for q in quotas]
    left = total - sum(counts)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return counts


# --- split ---------------------------------------------------------------------------------

def parse_fractions(text: str) -> list[float]:
    """'0.9,0.1' → [0.9, 0.1]; each must be > 0 and together they must sum to 1."""
    try:
        fractions = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"bad --fractions {text!r}", hint="give comma-separated numbers, e.g. 0.9,0.1") from None
    if len(fractions) < 2:
        raise UsageError(f"--fractions {text!r} names one part; a split needs at least two", hint="e.g. 0.9,0.1")
    if any(not f > 0 for f in fractions):
        raise UsageError(f"--fractions {text!r}: every fraction must be greater than 0")
    if abs(sum(fractions) - 1) > SUM_TOLERANCE:
        raise UsageError(f"--fractions {text!r} sum to {sum(fractions):g}, not 1",
                         hint="e.g. 0.9,0.1 or 0.8,0.1,0.1")
    return fractions


def split_names(names: str | None, parts: int) -> list[str]:
    """The part names: given as 'train,test', or by default train,test / train,val,test."""
    if names is None:
        defaults = {2: ["train", "test"], 3: ["train", "val", "test"]}
        if parts not in defaults:
            raise UsageError(f"{parts} fractions need --names", hint="e.g. --names a,b,c,d")
        return defaults[parts]
    found = [name.strip() for name in names.split(",")]
    if len(found) != parts:
        raise UsageError(f"--names gives {len(found)} names for {parts} fractions")
    bad = [name for name in found if not _NAME.match(name)]
    if bad:
        raise UsageError(f"bad part name {bad[0]!r}", hint="use letters, digits, - and _")
    if len(set(found)) != len(found):
        raise UsageError(f"--names {names!r} repeats a name")
    return found


def split_paths(prefix: str | Path, names: Sequence[str]) -> list[Path]:
    """Output file of each part: PREFIX.NAME.jsonl (a trailing .jsonl on PREFIX is dropped)."""
    prefix = str(prefix)
    if prefix.endswith(".jsonl"):
        prefix = prefix[: -len(".jsonl")]
    return [Path(f"{prefix}.{name}.jsonl") for name in names]


def split_records(records: Sequence[Record], fractions: Sequence[float], seed: int) -> list[list[Record]]:
    """Shuffle `records` with `seed`, then cut them into consecutive parts of the given fractions."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    parts: list[list[Record]] = []
    start = 0
    for count in allocate(len(records), fractions):
        parts.append([records[i] for i in order[start:start + count]])
        start += count
    return parts


# --- sample --------------------------------------------------------------------------------

def sample_records(records: Sequence[Record], n: int, seed: int, allow_fewer: bool = False,
                   name: str = "input") -> list[Record]:
    """`n` distinct rows chosen with `seed`, kept in their input order.

    Asking for more rows than there are is a DataError, unless `allow_fewer` (then all rows).
    """
    if n < 0:
        raise UsageError(f"cannot sample {n} rows")
    if n > len(records):
        if not allow_fewer:
            raise DataError(f"{name} has {len(records)} rows, cannot sample {n} without replacement",
                            hint="lower -n, or pass --allow-fewer to take every row")
        return list(records)
    chosen = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in chosen]


# --- mix -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MixSource:
    """One input of a mix: a file and its ratio (a relative weight in the output)."""

    path: str
    ratio: float


def parse_mix_source(text: str) -> MixSource:
    """'data/med.jsonl:1' → MixSource('data/med.jsonl', 1.0); without ':RATIO' the ratio is 1."""
    path, sep, ratio = text.rpartition(":")
    if sep:
        try:
            value = float(ratio)
        except ValueError:
            value = None
        if value is not None:
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"bad ratio in {text!r}: ratios must be positive numbers")
            if not path:
                raise UsageError(f"{text!r} has a ratio but no file", hint="write FILE:RATIO, e.g. med.jsonl:1")
            return MixSource(path, value)
    return MixSource(text, 1.0)


def mix_counts(sizes: Sequence[int], ratios: Sequence[float], total: int | None = None,
               names: Sequence[str] | None = None) -> list[int]:
    """Rows to take from each source so the output has the ratios' proportions.

    With `total`, the output has exactly `total` rows; a source too small for its share is a
    DataError. Without it, the output is the largest total whose exact shares every source
    can supply without replacement (so the smallest source, relative to its ratio, is used up).
    """
    names = list(names) if names is not None else [f"source {i + 1}" for i in range(len(sizes))]
    for name, size in zip(names, sizes, strict=True):
        if size == 0:
            raise DataError(f"{name} has no rows to mix")
    if total is not None:
        counts = allocate(total, ratios)
        for name, size, count, ratio in zip(names, sizes, counts, ratios, strict=True):
            if count > size:
                raise DataError(f"{name}: --total {total} needs {count} rows from it (ratio {ratio:g}) "
                                f"but it has {size}",
                                hint="lower --total, or leave it out to take the largest mix the files allow")
        return counts
    weights = [Fraction(str(r)) for r in ratios]
    whole = sum(weights)
    # The largest total whose exact shares (total · ratio / sum of ratios) all fit; step down
    # in the rare case that rounding the shares to whole rows overshoots a source.
    upper = min(math.floor(size * whole / w) for size, w in zip(sizes, weights))
    for candidate in range(upper, 0, -1):
        counts = allocate(candidate, ratios)
        if all(c <= s for c, s in zip(counts, sizes)):
            return counts
    raise DataError("the sources are too small for these ratios")


def mix_records(sources: Sequence[tuple[str, Sequence[Record]]], ratios: Sequence[float],
                total: int | None, seed: int, tag_source: bool = False) -> tuple[list[Record], list[int]]:
    """Mix (name, records) sources by `ratios` (see `mix_counts`); return (rows, per-source counts).

    Rows are drawn without replacement with `seed` and the output is shuffled. With
    `tag_source` each row gets a `source` key naming its file (a row that already has one is
    a DataError rather than being overwritten).
    """
    names = [name for name, _ in sources]
    counts = mix_counts([len(rows) for _, rows in sources], ratios, total, names)
    rng = random.Random(seed)
    mixed: list[Record] = []
    for (name, rows), count in zip(sources, counts):
        for i in sorted(rng.sample(range(len(rows)), count)):
            row = rows[i]
            if tag_source:
                if "source" in row:
                    raise DataError(f"{name}: a row already has a 'source' key; --tag-source would overwrite it",
                                    hint="leave out --tag-source, or rename that key first")
                row = {**row, "source": name}
            mixed.append(row)
    rng.shuffle(mixed)
    return mixed, counts
