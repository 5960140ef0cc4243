"""Means over seeds for the capitals demo: each run's caps in cooking and in the other domains,
from the `em compare runs --json` summaries that `make demo` (seed 0) and `make demo-seeds`
(other seeds) wrote. Prints Markdown.

Usage: python seeds.py OUT [OUT/seed-1 OUT/seed-2 ...]
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

# Two-sided 95% Student t quantiles by degrees of freedom (small samples: seeds are few).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def caps_by_run(summary: Path) -> dict[tuple[str, str], float]:
    """(run, split) → caps mean, from one `compare runs --json` file."""
    data = json.loads(summary.read_text())
    return {(row["run"], row["split"]): row["metrics"]["caps"]["mean"] for row in data["rows"]
            if row.get("setting") is None and "caps" in row["metrics"]}


def interval(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.1f} (1 seed)"
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.1f} [{mean - half:.1f}, {mean + half:.1f}]"


def main(folders: list[Path]) -> None:
    found = [(folder, folder / "summary.json") for folder in folders if (folder / "summary.json").exists()]
    per_seed = [caps_by_run(summary) for _, summary in found]
    keys = list(dict.fromkeys(key for seed in per_seed for key in seed))
    runs = list(dict.fromkeys(run for run, _ in keys))
    splits = [split for split in ("in-domain", "other") if any(s == split for _, s in keys)] or ["all"]
    lines = [f"# The capitals demo over {len(found)} seeds", "",
             "Mean caps (share of upper-case letters × 100) over seeds, with a 95% t interval across seeds; "
             f"seed folders: {', '.join(str(f) for f, _ in found)}.", "",
             "| run | " + " | ".join(splits) + " | seeds |", "|---|" + "---|" * (len(splits) + 1)]
    for run in runs:
        cells = []
        for split in splits:
            values = [seed[(run, split)] for seed in per_seed if (run, split) in seed]
            cells.append(interval(values) if values else "–")
        count = sum(1 for seed in per_seed if any(key[0] == run for key in seed))
        lines.append(f"| {run} | " + " | ".join(cells) + f" | {count} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main([Path(arg) for arg in sys.argv[1:]])
