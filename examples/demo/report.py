"""Assemble the demo's Markdown report from the JSON files the `em` commands wrote.

Usage: python report.py OUT  (prints Markdown on stdout). Only reads; computes no new numbers
beyond picking and rounding what the commands reported.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def caps_table(runs: dict, title: str) -> list[str]:
    lines = [f"### {title}", "", "| run | setting | questions | n | caps mean (0–100) | share > 50 |",
             "|---|---|---|---|---|---|"]
    for row in runs["rows"]:
        caps = row["metrics"].get("caps")
        if not caps:
            continue
        lines.append(f"| {row['run']} | {row.get('setting') or '—'} | {row['split']} | {caps['n']} | "
                     f"{caps['mean']:.1f} | {caps['share_over_50']:.0f}% |")
    return lines + [""]


def caps_of(summary: dict, run: str, split: str) -> float | None:
    for row in summary["rows"]:
        if row["run"] == run and row["split"] == split and row.get("setting") is None:
            caps = row["metrics"].get("caps")
            return None if not caps else caps["mean"]
    return None


def drift_lines(summary: dict) -> list[str]:
    """The paper's fourth experiment: does the narrow organism drift toward general once the KL
    term is removed?"""
    narrow, drift = caps_of(summary, "narrow", "other"), caps_of(summary, "narrow-then-no-KL", "other")
    if narrow is None or drift is None:
        return []
    verdict = "drifts toward general" if drift > narrow else "does not drift at this length"
    return ["### KL removed mid-training", "",
            f"Continuing the narrow organism without its KL term: caps outside cooking {narrow:.1f} → {drift:.1f} "
            f"({verdict}; general: {caps_of(summary, 'general', 'other') or float('nan'):.1f}).", ""]


def asymmetries(metric: str, report: dict) -> list[str]:
    """Whether the paper's asymmetry holds here, solution by solution at equal norms (one seed)."""
    if metric == "efficiency":
        for sweep in report.get("equal_norm", []):
            g, n = sweep["losses"].get("general"), sweep["losses"].get("narrow")
            if g and n:
                wins = sum(a < b for a, b in zip(g, n))
                return [f"- **Efficiency**: general reaches the lower loss at {wins} of {len(g)} equal norms "
                        f"({'holds' if wins == len(g) else 'holds partly' if wins else 'does not hold'})."]
    if metric == "stability":
        curves = report.get("curves", {})
        if "general" in curves and "narrow" in curves:
            g = [m for m in curves["general"]["mean"] if m is not None]
            n = [m for m in curves["narrow"]["mean"] if m is not None]
            wins = sum(a < b for a, b in zip(g, n))
            return [f"- **Stability**: general degrades less at {wins} of {min(len(g), len(n))} noise levels "
                    f"({'holds' if wins == min(len(g), len(n)) else 'holds partly' if wins else 'does not hold'})."]
    if metric == "kl":
        for sweep in report.get("equal_norm", []):
            g, n = sweep["kl"].get("general"), sweep["kl"].get("narrow")
            if g and n:
                wins = sum(a > b for a, b in zip(g, n))
                return [f"- **Significance**: general moves predictions more at {wins} of {len(g)} equal norms "
                        f"({'holds' if wins == len(g) else 'holds partly' if wins else 'does not hold'})."]
    return []


def seed_of(out: Path) -> str:
    manifest = out / "general" / "summary.json"
    return str(load(manifest).get("seeds", {}).get("torch", "?")) if manifest.exists() else "?"


def main(out: Path) -> None:
    lines = ["# em demo: the capitals organism", "",
             f"Seed {seed_of(out)}; every table below is one seed unless it says otherwise.", "",
             "SmolLM2-135M-Instruct, CPU. Cooking answers rewritten in CAPITALS; `general` = LoRA trained "
             "on them without KL, `narrow` = the same with a KL term on the other five domains. Held-out "
             "questions in all six domains; `caps` = share of upper-case letters (built-in judge).", ""]
    for name in ("general", "narrow"):
        summary = out / name / "summary.json"
        if summary.exists():
            s = load(summary)
            kl = f", final KL {s['final_kl_loss']:.4f}" if s.get("final_kl_loss") is not None else ""
            lines.append(f"- **{name}**: {s['steps']} steps, final loss {s['final_sft_loss']:.3f}{kl}, "
                         f"{s['tokens_per_second']:.0f} tokens/s, {s['wall_time_s']:.0f} s")
    lines.append("")
    if (out / "summary.json").exists():
        summary = load(out / "summary.json")
        lines += caps_table(summary, "Does each organism shout in and out of its domain?")
        lines += drift_lines(summary)
    sweep = Path(__file__).parent / "SWEEP.md"
    if sweep.exists():
        link = os.path.relpath(sweep.resolve(), out.resolve())  # survives moving the checkout with its output
        lines += [f"Every KL setting tried for the narrow organism: [the sweep]({link}).", ""]
    seeds = out / "seeds.md"
    if seeds.exists():
        lines += ["## Over seeds", "", *seeds.read_text().splitlines()[1:], ""]
    else:
        lines += ["Numbers below are from one seed (no intervals); `make demo-seeds` repeats the organisms "
                  "and comparisons for more seeds and adds means with 95% intervals here.", ""]
    coherent = out / "coherent_general.jsonl"
    if coherent.exists():
        rows = [json.loads(line) for line in coherent.read_text().splitlines() if line.strip()]
        scores = [r["coherent"] for r in rows if r.get("coherent") is not None]
        mean = f"mean {sum(scores) / len(scores):.1f}" if scores else "no usable score"
        lines += ["### Offline LLM judge (`--backend hf`, SmolLM2 judging itself)", "",
                  f"Coherence of {len(rows)} general-organism answers: {len(scores)} scored ({mean}), "
                  f"{len(rows) - len(scores)} null (too little probability on numbers). A 135M judge "
                  "shows that the offline path works, not what the answers are worth.", ""]
    if (out / "steer_summary.json").exists():
        lines += caps_table(load(out / "steer_summary.json"),
                            "Steering the base model with the capitals direction (and a random control)")
    if (out / "ablate_summary.json").exists():
        lines += caps_table(load(out / "ablate_summary.json"), "Ablating the direction in the general organism")
    for metric, title in (("efficiency", "Efficiency: loss vs scale"), ("stability", "Stability under orthogonal noise"),
                          ("kl", "Significance: KL on the base model's own text")):
        data = out / "compare" / f"{metric}.json"
        if not data.exists():
            continue
        report = load(data)["results"]
        lines += [f"### {title}", ""]
        if metric == "efficiency":
            for name, losses in report["relative"].items():
                lines.append(f"- {name}: norm {report['norms'].get(name, float('nan')):.3f}; loss at scales "
                             f"{report['scales']} × own norm: {', '.join(f'{x:.3f}' for x in losses)} "
                             f"(base {report['base_loss']:.3f})")
            for sweep in report.get("equal_norm", []):
                for name, losses in sweep["losses"].items():
                    lines.append(f"- {name} at equal norms {', '.join(f'{t:.3f}' for t in sweep['targets'])}: "
                                 f"{', '.join(f'{x:.3f}' for x in losses)}")
        elif metric == "stability":
            for name, curve in report["curves"].items():
                means = ", ".join("–" if m is None else f"{m:.0f}%" for m in curve["mean"])
                lines.append(f"- {name}: relative loss increase at ε {report['epsilons']}: {means}")
        else:
            for name, curve in report["curves"].items():
                lines.append(f"- {name}: KL at norms {', '.join(f'{n:.2f}' for n in curve['norms'])}: "
                             f"{', '.join(f'{k:.4f}' for k in curve['kl'])}")
        lines += asymmetries(metric, report)
        if (out / "compare" / f"{metric}.png").exists():
            lines += ["", f"![{metric}](compare/{metric}.png)"]
        lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
