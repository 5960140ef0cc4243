"""Figures for the comparison metrics, drawn from their JSON results (so they can be redrawn).

matplotlib is imported only here, inside the functions, with the non-interactive Agg
backend. Random controls of one solution are drawn as one curve: their mean with a ±1 std
band. The legend gives each solution's norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from em_cli.artifacts.atomic import atomic_path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def _series(names: Sequence[str], solutions: dict[str, dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(label, member names): one series per trained solution, one per group of controls."""
    series: list[tuple[str, list[str]]] = []
    controls: dict[str, list[str]] = {}
    for name in names:
        source = solutions.get(name, {}).get("control_of")
        if source:
            controls.setdefault(source, []).append(name)
        else:
            series.append((_label(name, solutions.get(name, {})), [name]))
    for source, members in controls.items():
        norm = solutions.get(members[0], {}).get("norm")
        count = f" ×{len(members)}" if len(members) > 1 else ""
        series.append((f"random{count} ~ {source} (‖·‖={norm:.3g})" if norm is not None else f"random ~ {source}",
                       members))
    return series


def _label(name: str, solution: dict[str, Any]) -> str:
    norm = solution.get("norm")
    return f"{name} (‖·‖={norm:.3g})" if norm is not None else name


def _mean_band(rows: Sequence[Sequence[float | None]]) -> tuple[list[float], list[float]]:
    """Mean and std over the first axis of equal-length rows (None values skipped)."""
    import math

    means, stds = [], []
    for column in zip(*rows, strict=True):
        values = [v for v in column if v is not None]
        if not values:
            means.append(math.nan)
            stds.append(0.0)
            continue
        mean = sum(values) / len(values)
        means.append(mean)
        stds.append(math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)
    return means, stds


def _curve(ax: Any, x: Sequence[float], rows: Sequence[Sequence[float | None]], label: str, dashed: bool) -> None:
    means, stds = _mean_band(rows)
    line = ax.plot(x, means, marker="o", markersize=3, linestyle="--" if dashed else "-", label=label)[0]
    if len(rows) > 1 or any(s > 0 for s in stds):
        ax.fill_between(x, [m - s for m, s in zip(means, stds, strict=True)],
                        [m + s for m, s in zip(means, stds, strict=True)], color=line.get_color(), alpha=0.2)


def plot_efficiency(report: dict[str, Any], path: str | Path) -> None:
    plt = _pyplot()
    results = report["results"]
    solutions = {s["name"]: s for s in report["solutions"]}
    sweeps = results["equal_norm"]
    fig, axes = plt.subplots(1, 1 + len(sweeps), figsize=(5.5 * (1 + len(sweeps)), 4.2), squeeze=False)
    ax = axes[0][0]
    for label, members in _series(list(results["relative"]), solutions):
        _curve(ax, results["scales"], [results["relative"][m] for m in members], label, len(members) > 1
               or bool(solutions[members[0]].get("control_of")))
    ax.axhline(results["base_loss"], color="grey", linestyle=":", label=f"base model ({results['base_loss']:.3f})")
    ax.set(xlabel="relative scale s (× own norm)", ylabel="loss (assistant-token CE)", title="Loss vs relative scale")
    ax.legend(fontsize=7)
    for ax, sweep in zip(axes[0][1:], sweeps, strict=True):
        for label, members in _series(list(sweep["losses"]), solutions):
            _curve(ax, sweep["targets"], [sweep["losses"][m] for m in members], label,
                   bool(solutions[members[0]].get("control_of")))
        ax.axhline(results["base_loss"], color="grey", linestyle=":", label="base model")
        unit = "‖alpha·v‖" if sweep["kind"] == "vector" else "mean ‖B·A‖_F"
        ax.set(xlabel=f"absolute norm ({unit})", ylabel="loss", title=f"Loss at equal norms ({sweep['kind']}s)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Efficiency — {report.get('model', {}).get('model', '')}", fontsize=10)
    _save(fig, path)


def plot_stability(report: dict[str, Any], path: str | Path) -> None:
    plt = _pyplot()
    results = report["results"]
    solutions = {s["name"]: s for s in report["solutions"]}
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, curve in results["curves"].items():
        # One series per solution, at its own measured cosines (an adapter's B·A moves ≈ 1−ε²,
        # a vector √(1−ε²)); the band is ±1 std over seeds. Reports without cosines: ε.
        measured = curve.get("cosine_mean")
        x = measured if measured and all(c is not None for c in measured) else results["epsilons"]
        _curve(ax, x, list(zip(*curve["relative"], strict=True)), _label(name, solutions[name]), False)
    ax.axhline(0, color="grey", linestyle=":")
    ax.axhline(100, color="grey", linestyle=":", label="100% = base model")
    with_cosines = all(c.get("cosine_mean") for c in results["curves"].values())
    if with_cosines:
        ax.invert_xaxis()  # more noise to the right
    ax.set(xlabel=("measured cos(perturbed, original) — adapters: of B·A, mean over modules" if with_cosines
                   else "ε (noise fraction)"), ylabel="relative loss increase (%)",
           title=f"Stability — mean ± std over {results['seeds']} seeds")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_kl(report: dict[str, Any], path: str | Path) -> None:
    plt = _pyplot()
    results = report["results"]
    solutions = {s["name"]: s for s in report["solutions"]}
    kinds = sorted({c["kind"] for c in results["curves"].values()})
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        names = [n for n, c in results["curves"].items() if c["kind"] == kind]
        for label, members in _series(names, solutions):
            curves = [results["curves"][m] for m in members]
            _curve(ax, curves[0]["norms"], [c["kl"] for c in curves], label, bool(curves[0].get("control_of")))
        unit = "‖scale·v‖" if kind == "vector" else "mean ‖B·A‖_F"
        ax.set(xlabel=f"norm ({unit})", ylabel="KL(P_base ‖ P_steered) per token (nats)",
               title=f"Pre-training KL ({kind}s)")
        ax.legend(fontsize=7)
    sources = "; ".join(dict.fromkeys(t.get("label", t.get("kind", "?")) for t in results["text_sets"]))
    fig.suptitle(f"Text: {sources}", fontsize=9)
    _save(fig, path)


def plot_runs(report: dict[str, Any], path: str | Path) -> None:
    """EM% and coherent% bars per run (× setting) and split, with 95% intervals. A share with
    no rows to count (null) gets no bar but an "n/a" mark, so it cannot be read as 0%."""
    plt = _pyplot()
    rows = report["rows"]
    splits = list(dict.fromkeys(r["split"] for r in rows))
    groups = list(dict.fromkeys((r["run"], r["setting"]) for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.4 * len(groups) * len(splits) + 3), 4.2))
    width = 0.8 / len(splits)
    for ax, key, title in ((axes[0], "em", f"EM% ({report['em_definition']})"), (axes[1], "coherent", "coherent%")):
        missing_x = []
        for i, split in enumerate(splits):
            xs, values, low, high = [], [], [], []
            for g, group in enumerate(groups):
                x = g + (i - (len(splits) - 1) / 2) * width
                row = next((r for r in rows if (r["run"], r["setting"]) == group and r["split"] == split), None)
                share = row[key] if row else {}
                pct = share.get("pct")
                if pct is None:
                    missing_x.append(x)
                    continue
                ci = share.get("ci") or [pct, pct]
                xs.append(x)
                values.append(pct)
                low.append(max(pct - ci[0], 0.0))
                high.append(max(ci[1] - pct, 0.0))
            ax.bar(xs, values, width, yerr=[low, high], capsize=2, label=split)
        for x in missing_x:
            ax.text(x, 1.0, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="grey")
        ax.set_xticks(range(len(groups)), [run if setting is None else f"{run}\n{setting}" for run, setting in groups],
                      fontsize=7)
        ax.set(ylabel="%", title=title, ylim=(0, 100))
        ax.legend(fontsize=7)
    note = "95% Wilson intervals" + ("; n/a = no rows with the scores needed" if any(
        r[k]["pct"] is None for r in rows for k in ("em", "coherent")) else "")
    fig.text(0.01, 0.01, note, fontsize=7, color="grey")
    _save(fig, path)
