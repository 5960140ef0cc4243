"""`em compare efficiency` and `em compare stability`: loss-based comparisons of solutions (docs/METHODS.md §6)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._options import BASE_MODEL, JsonOpt, renamed, with_options
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress
from em_cli.commands.compare import app
from em_cli.commands.compare._shared import (COMPARED, LOSS_DATA, ControlsOpt, NormFractionsOpt, OldFractionsOpt,
                                             QuickOpt, cos_note, finish_run, floats, loss_data, run_settings,
                                             solutions_of, some_columns)


@app.command("efficiency")
@with_options(COMPARED, LOSS_DATA, BASE_MODEL)
def efficiency(
    ctx: typer.Context,
    random_controls: ControlsOpt = 0,
    quick: QuickOpt = False,
    scales: Annotated[str | None, typer.Option(
        "--scales", help="Scales of each solution's own norm, comma-separated (default 0,0.25,…,2).")] = None,
    norm_fractions: NormFractionsOpt = None,
    json_: JsonOpt = False,
    old_fractions: OldFractionsOpt = None,
    **flags: Any,
) -> None:
    """Loss of each solution vs its scale, and of all of them at equal norms.

    Relative sweep: s × own norm, s ∈ 0..2 (s = 0 is the base model exactly, s = 1 the
    solution). Equal norms: p × the mean norm of the solutions of one kind, p ∈ 0.2..2
    (docs/METHODS.md §6). Norms: ‖alpha·v‖ for vectors, mean over modules of ‖B·A‖_F for adapters.

    Example: em compare efficiency -m M --solutions general=runs/g narrow=runs/n --data train.jsonl -o cmp/
    """
    from em_cli.comparison.metric_runs import run_efficiency
    from em_cli.comparison.plots import plot_efficiency

    fractions = renamed(norm_fractions, old_fractions, "--fractions", "--norm-fractions")
    run = run_efficiency(solutions_of(ctx, True, random_controls), loss_data(flags), floats(scales, "--scales"),
                         floats(fractions, "--norm-fractions"), quick, run_settings(ctx), out, RowProgress)
    finish_run(run, flags["output"], [flags["data"]], plot_efficiency, json_)
    result, grid = run.result, run.settings["scales"]
    out.log(f"{result.evaluations} loss evaluations in {run.extra['wall_time_s']:.1f}s "
            f"({run.extra['seconds_per_evaluation']:.2f}s each)")
    if not json_:
        bench = run.opened.bench
        shown = [s for s in grid if s in (0.0, 1.0, max(grid))]
        out.table(["solution", "kind", "norm", *[f"loss s={s:g}" for s in shown]],
                  [[name, bench.handles[name].kind, bench.handles[name].norm,
                    *[result.relative[name][grid.index(s)] for s in shown]] for name in bench.names],
                  title=f"Efficiency (base loss {result.base_loss:.4f})")


@app.command("stability")
@with_options(COMPARED, LOSS_DATA, BASE_MODEL)
def stability(
    ctx: typer.Context,
    quick: QuickOpt = False,
    epsilons: Annotated[str | None, typer.Option(
        "--epsilons", help="Noise fractions ε (default 0.01,0.05,0.1,0.2,…,1.0).")] = None,
    draws: Annotated[int | None, typer.Option("--draws", min=1, help="Noise draws per ε (default 10).")] = None,
    json_: JsonOpt = False,
    old_seeds: Annotated[int | None, typer.Option("--seeds", hidden=True, min=1, help="Old name of --draws.")] = None,
    **flags: Any,
) -> None:
    """Relative loss increase of each solution under norm-preserving orthogonal noise.

    x′ = √(1−ε²)x + εy per vector, or per LoRA A and B matrix; 100·(L_perturbed − L_orig) /
    (L_base − L_orig): 0% = as trained, 100% = base model; mean ± std over draws (docs/METHODS.md §6).
    Each point also records the measured cosine between the perturbed and the original
    solution — for adapters of B·A (≈ 1−ε², not √(1−ε²)) — which the plot uses as its x-axis.
    One model load and #ε × #draws × #solutions + 1 + #solutions loss evaluations.

    Example: em compare stability -m M --solutions general=runs/g narrow=runs/n --data train.jsonl -o cmp/
    """
    from em_cli.comparison.metric_runs import run_stability
    from em_cli.comparison.plots import plot_stability

    draws = renamed(draws, old_seeds, "--seeds", "--draws")
    run = run_stability(solutions_of(ctx, True), loss_data(flags), floats(epsilons, "--epsilons"), draws, quick,
                        run_settings(ctx), out, RowProgress)
    finish_run(run, flags["output"], [flags["data"]], plot_stability, json_)
    result, grid = run.result, run.settings["epsilons"]
    out.log(f"measured wall time: {run.extra['wall_time_s']:.1f}s for {result.evaluations} loss evaluations "
            f"({run.extra['seconds_per_evaluation']:.2f}s each)")
    if not json_:
        shown = some_columns(grid, (0.1, 0.5, 1.0))
        table_rows = []
        for name, curve in result.curves.items():
            cells = [(f"{curve.mean[i]:.1f}±{curve.std[i]:.1f}" + cos_note(curve.cosine_mean[i]))
                     if curve.mean[i] is not None else None for i in shown]
            table_rows.append([name, curve.original_loss, curve.gap, *cells])
        out.table(["solution", "L_orig", "L_base−L_orig", *[f"ε={grid[i]:g}" for i in shown]], table_rows,
                  title=f"Stability: relative loss increase %, mean ± std, at the measured cosine to the original "
                        f"(base loss {result.base_loss:.4f})")
