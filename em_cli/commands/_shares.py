"""Cells for tables of judged results (`em judge summary`, `em compare runs`): shares with
intervals, metric means, label shares. None means "no value" (the table prints –)."""

from __future__ import annotations

from typing import Any


def share(entry: dict[str, Any], interval: bool = True) -> str | None:
    """A percentage, with its interval when there is one: `12.5 [8.1, 18.0]`."""
    if entry["pct"] is None:
        return None
    return f"{entry['pct']:.1f}" + (f" {bounds(entry['ci'])}" if interval and entry.get("ci") else "")


def bounds(ci: list[float] | None, signed: bool = False) -> str | None:
    if ci is None:
        return None
    return f"[{ci[0]:+.1f}, {ci[1]:+.1f}]" if signed else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def difference(entry: dict[str, Any]) -> str | None:
    """A difference in points with its interval: `+4.0 [-1.2, +9.5]`."""
    if entry["diff"] is None:
        return None
    return f"{entry['diff']:+.1f}" + (f" {bounds(entry['ci'], signed=True)}" if entry["ci"] else "")


def mean(stats: dict[str, Any] | None, share_over_50: bool = False) -> str | None:
    """A metric's mean, optionally with the share of scores over 50: `61.2 (70% >50)`."""
    if not stats or stats.get("mean") is None:
        return None
    text = f"{stats['mean']:.1f}"
    if share_over_50 and stats["share_over_50"] is not None:
        text += f" ({stats['share_over_50']:.0f}% >50)"
    return text


def labels(stats: dict[str, Any] | None, top: int = 3) -> str | None:
    """The most common labels with their shares, e.g. `TRUE 62% FALSE 30% +1`."""
    if not stats or not stats["labels"]:
        return None
    shares = list(stats["labels"].items())
    text = " ".join(f"{name} {entry['pct']:.0f}%" for name, entry in shares[:top])
    return text + (f" +{len(shares) - top}" if len(shares) > top else "")


def metric_cell(stats: dict[str, Any] | None) -> str | None:
    """A categorical metric's label shares, else its mean with the share over 50."""
    if stats and stats.get("kind") == "label":
        return labels(stats)
    return mean(stats, share_over_50=True)
