"""Means over seeds for the capitals demo: each run's caps in cooking and in the other domains,
from the `em compare runs --json` summaries that `make demo` (seed 0) and `make demo-seeds`
(other seeds) wrote, the ablation of the capitals direction in each seed's general organism,
and the paper's three asymmetries per seed from each seed's
`compare/{efficiency,stability,kl}.json`. Prints Markdown.

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
    """Mean caps with its 95% t interval, the interval cut to the 0–100 scale caps lives on."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.1f} (1 seed)"
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.1f} [{max(mean - half, 0.0):.1f}, {min(mean + half, 100.0):.1f}]"


def mean_gap(pairs: list[tuple[float, float]]) -> float | None:
    """Mean of (a - b) over the pairs with both values."""
    gaps = [a - b for a, b in pairs if a is not None and b is not None]
    return statistics.fmean(gaps) if gaps else None


def asymmetry_gaps(folder: Path) -> dict[str, float]:
    """One seed's three asymmetries, each as a gap that is > 0 where the paper's result holds:
    efficiency = narrow − general loss, stability = narrow − general relative loss increase (%),
    significance = general − narrow KL (nats/token); each averaged over the equal norms (or noise
    levels) of that seed's `em compare` run."""
    gaps: dict[str, float] = {}
    compare = folder / "compare"
    for metric, key, sign in (("efficiency", "losses", -1), ("kl", "kl", 1)):
        path = compare / f"{metric}.json"
        sweeps = json.loads(path.read_text())["results"].get("equal_norm", []) if path.exists() else []
        for sweep in sweeps:
            general, narrow = sweep[key].get("general"), sweep[key].get("narrow")
            if general and narrow:
                gap = mean_gap(list(zip(general, narrow)))
                if gap is not None:
                    gaps[metric] = sign * gap
                break
    path = compare / "stability.json"
    if path.exists():
        curves = json.loads(path.read_text())["results"].get("curves", {})
        if "general" in curves and "narrow" in curves:
            gap = mean_gap(list(zip(curves["narrow"]["mean"], curves["general"]["mean"])))
            if gap is not None:
                gaps["stability"] = gap
    return gaps


def verdict(values: list[float]) -> str:
    """Whether a gap that should be > 0 is: by its interval over seeds where there are several."""
    if len(values) < 2:
        return "holds on this seed" if values[0] > 0 else "does not hold on this seed"
    mean = statistics.fmean(values)
    half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    if mean - half > 0:
        return "holds (interval above 0)"
    if mean + half < 0:
        return "reversed (interval below 0)"
    return f"not resolved (interval spans 0; > 0 on {sum(v > 0 for v in values)} of {len(values)} seeds)"


ASYMMETRIES = (("efficiency", "Efficiency: narrow − general loss at equal norms", "{:.4f}"),
               ("stability", "Stability: narrow − general loss increase under noise (points of %)", "{:.1f}"),
               ("kl", "Significance: general − narrow KL at equal norms (nats/token)", "{:.4f}"))


def asymmetry_lines(folders: list[Path]) -> list[str]:
    per_seed = [asymmetry_gaps(folder) for folder in folders]
    lines = ["", "The paper's asymmetries, one gap per seed (> 0 where the paper's result holds), mean with a "
             "95% t interval across seeds:", "", "| asymmetry | mean gap | seeds | verdict |", "|---|---|---|---|"]
    for metric, title, fmt in ASYMMETRIES:
        values = [gaps[metric] for gaps in per_seed if metric in gaps]
        if not values:
            continue
        mean = statistics.fmean(values)
        if len(values) > 1:
            half = T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
            cell = f"{fmt.format(mean)} [{fmt.format(mean - half)}, {fmt.format(mean + half)}]"
        else:
            cell = fmt.format(mean)
        lines.append(f"| {title} | {cell} | {len(values)} | {verdict(values)} |")
    return lines if len(lines) > 5 else []


def ablation_lines(folders: list[Path]) -> list[str]:
    """Cooking caps of each seed's general organism, with the capitals direction ablated and with
    a norm-matched random direction ablated (`ablate_summary.json`), over seeds."""
    per_seed = []
    for folder in folders:
        path = folder / "ablate_summary.json"
        if path.exists():
            rows = json.loads(path.read_text())["rows"]
            per_seed.append({(row["run"], row.get("setting")): row["metrics"]["caps"]["mean"] for row in rows
                             if row["split"] == "in-domain" and "caps" in row["metrics"]})
    if not per_seed:
        return []
    lines = ["", "Ablating the capitals direction (every layer) in each seed's general organism: caps in cooking "
             "on the steering questions, mean with a 95% t interval across seeds (cut to 0–100):", "",
             "| model | cooking caps | seeds |", "|---|---|---|"]
    for label, key in (("general", ("general", None)), ("general, direction ablated", ("ablated", "ablate")),
                       ("general, random direction ablated", ("ablated", "ablate-random0"))):
        values = [seed[key] for seed in per_seed if key in seed]
        if values:
            lines.append(f"| {label} | {interval(values)} | {len(values)} |")
    return lines


def main(folders: list[Path]) -> None:
    found = [(folder, folder / "summary.json") for folder in folders if (folder / "summary.json").exists()]
    per_seed = [caps_by_run(summary) for _, summary in found]
    keys = list(dict.fromkeys(key for seed in per_seed for key in seed))
    runs = list(dict.fromkeys(run for run, _ in keys))
    splits = [split for split in ("in-domain", "other") if any(s == split for _, s in keys)] or ["all"]
    lines = [f"# The capitals demo over {len(found)} seeds", "",
             "Mean caps (share of upper-case letters × 100) over seeds, with a 95% t interval across seeds "
             "(cut to 0–100); "
             f"seed folders: {', '.join(str(f) for f, _ in found)}.", "",
             "| run | " + " | ".join(splits) + " | seeds |", "|---|" + "---|" * (len(splits) + 1)]
    for run in runs:
        cells = []
        for split in splits:
            values = [seed[(run, split)] for seed in per_seed if (run, split) in seed]
            cells.append(interval(values) if values else "–")
        count = sum(1 for seed in per_seed if any(key[0] == run for key in seed))
        lines.append(f"| {run} | " + " | ".join(cells) + f" | {count} |")
    lines += ablation_lines([folder for folder, _ in found])
    lines += asymmetry_lines([folder for folder, _ in found])
    print("\n".join(lines))


if __name__ == "__main__":
    main([Path(arg) for arg in sys.argv[1:]])
