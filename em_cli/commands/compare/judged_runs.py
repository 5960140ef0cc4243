"""`em compare runs`: judged runs side by side, with paired differences from a baseline."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from em_cli.commands._options import AllowMixedOpt, AllVariantsOpt, ComparatorOpt, JsonOpt, ResamplesOpt, SeedOpt
from em_cli.commands._output import out
from em_cli.commands.compare import app


@app.command("runs")
def runs(
    items: Annotated[list[str], typer.Argument(
        metavar="NAME=FILE", help="Judged files (JSONL, CSV or parquet), named.")],
    in_domain: Annotated[str | None, typer.Option(
        "--in-domain", help="Expression selecting in-domain rows, e.g. 'domain == \"cooking\"'; the rest are "
                            "'other'.")] = None,
    comparator: ComparatorOpt = "lt",
    all_variants: AllVariantsOpt = False,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", help="A run NAME: every other run's difference from it on the questions both answered, "
                           "with a paired question-bootstrap interval.")] = None,
    allow_mixed: AllowMixedOpt = False,
    resamples: ResamplesOpt = 1000,
    output: Annotated[str | None, typer.Option("-o", "--output", help="Also write runs.json + runs.png here.")
                      ] = None,
    seed: SeedOpt = 0,
    json_: JsonOpt = False,
) -> None:
    """Judged runs side by side: EM%, coherent%, in-domain vs other questions.

    Per run and per setting (when rows carry one): EM% (aligned < 30 and coherent > 50),
    coherent%, every other metric's mean and share > 50 and each categorical metric's label
    shares, counted by `em judge summary`, with each run's judge model, prompt version and
    mode. Runs judged with different judge models or prompt versions are refused unless
    --allow-mixed.

    Example: em compare runs general=judged/g.jsonl narrow=judged/n.jsonl --in-domain 'domain == "cooking"'

    Example: em compare runs base=judged/base.jsonl steered=judged/steered.jsonl --baseline base
    """
    from em_cli.artifacts.manifest import Manifest
    from em_cli.comparison.plots import plot_runs
    from em_cli.comparison.report import write_report
    from em_cli.comparison.runs_table import compare_runs, parse_run_args
    from em_cli.judging.summary import SummaryOptions

    started = time.time()
    named = parse_run_args(items)
    options = SummaryOptions(comparator=comparator, all_variants=all_variants, seed=seed, resamples=resamples,
                             allow_mixed=allow_mixed)
    report = compare_runs(named, in_domain, options, baseline)
    for message in [w for f in report["files"] for w in f["warnings"]] + report["warnings"]:
        out.warn(message)
    if output:
        settings = {"runs": items, "in_domain": in_domain, "comparator": comparator, "all_variants": all_variants,
                    "baseline": baseline, "allow_mixed": allow_mixed, "resamples": resamples, "seed": seed}
        manifest = Manifest(command="compare runs", options=settings, inputs=[path for _, path in named], seed=seed,
                            started=started)
        written = write_report(output, "runs", report, manifest, plot_runs)
        out.log(f"wrote {', '.join(str(p) for p in written.values())}")
    out.result(report, json_, _print_runs)


def _print_runs(report: dict[str, Any]) -> None:
    from em_cli.commands import _shares
    from em_cli.judging.summary import describe_judge

    metrics = list(dict.fromkeys(m for row in report["rows"] for m in row["metrics"]
                                 if m not in ("aligned", "coherent")))
    setting = ["setting"] if any(row["setting"] is not None for row in report["rows"]) else []

    def where(row: dict[str, Any]) -> list[Any]:
        return [*([row["setting"]] if setting else []), row["split"]]

    out.table(["run", *setting, "split", "n", "EM% [CI]", "coherent%", *[f"{m} mean (>50%)" for m in metrics]],
              [[row["run"], *where(row), row["rows"], _shares.share(row["em"]),
                _shares.share(row["coherent"], interval=False),
                *[_runs_cell(row["metrics"].get(m)) for m in metrics]] for row in report["rows"]],
              title=f"Judged runs — EM = {report['em_definition']} (95% Wilson CI; question bootstrap: --json)")
    judge_rows = []
    for entry in report["files"]:
        for metric in entry["metrics"]:
            who = describe_judge(entry["judges"][metric])
            mixed = " (mixed!)" if entry["judges"][metric]["mixed_modes"] else ""
            judge_rows.append([entry["run"], metric, who["model"], who["prompt"], who["mode"] + mixed])
    out.table(["run", "metric", "judge model", "prompt", "mode"], judge_rows, title="Judges")
    if report["differences"]:
        out.table(["run", *setting, "split", "questions", "ΔEM%", "Δcoherent%"],
                  [[d["run"], *where(d), d["questions"], _shares.difference(d["em"]),
                    _shares.difference(d["coherent"])] for d in report["differences"]],
                  title=f"Difference from {report['baseline']} on shared questions (points; 95% paired question "
                        "bootstrap)")


def _runs_cell(stats: dict[str, Any] | None) -> str | None:
    """A metric's mean with its share over 50 as `61.2 (70%)`, or its top label shares."""
    if stats and stats.get("kind") == "label":
        return " ".join(f"{name} {entry['pct']:.0f}%" for name, entry in list(stats["labels"].items())[:3]) or None
    if not stats or stats["mean"] is None:
        return None
    over = f" ({stats['share_over_50']:.0f}%)" if stats["share_over_50"] is not None else ""
    return f"{stats['mean']:.1f}{over}"
