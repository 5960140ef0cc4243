"""`em compare`: efficiency, stability and pre-training KL of solutions, and judged runs side by side."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from em_cli.commands._options import (AllowMixedOpt, AllVariantsOpt, BatchSizeOpt, ComparatorOpt, DeviceOpt,
                                      DtypeOpt, JsonOpt, Load4bitOpt, ModelOpt, ResamplesOpt, SeedOpt,
                                      model_options, renamed)
from em_cli.commands._output import RowProgress, out
from em_cli.models.source import DEFAULT_MODEL

if TYPE_CHECKING:
    from em_cli.comparison.session import MetricRun, OpenedBench

app = typer.Typer(help="Efficiency, stability and pre-training KL of two solutions, with plots.",
                  no_args_is_help=True)

MoreSolutionsArg = Annotated[list[str] | None, typer.Argument(
    metavar="NAME=PATH", show_default=False,
    help="More solutions, so that `--solutions a=runs/a b=runs/b` works.")]
SolutionsOpt = Annotated[list[str] | None, typer.Option(
    "--solutions", "-s", show_default=False,
    help="NAME=PATH: a run dir of `em finetune` (adapter/ or vector.safetensors), a vector file or an adapter dir. "
         "All of one base model.")]
DataOpt = Annotated[str, typer.Option("--data", help="Chat JSONL the loss is measured on (the finetuning data).",
                                      show_default=False)]
OutDirOpt = Annotated[str, typer.Option("-o", "--output", help="Output directory (JSON, PNG, manifest).",
                                        show_default=False)]
RowsOpt = Annotated[int, typer.Option("--rows", min=1, help="Seeded rows of --data for the loss.")]
ControlsOpt = Annotated[int, typer.Option(
    "--random-controls", min=0, help="K norm-matched random controls per solution (seeded).")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="A small grid for smoke checks.")]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=8, help="Truncate conversations to this many tokens.")]
NormFractionsOpt = Annotated[str | None, typer.Option(
    "--norm-fractions", help="Equal norms: every solution of a kind at p × the mean norm of that kind's solutions, "
                             "for these p (comma-separated).")]
OldRowsOpt = Annotated[int | None, typer.Option("-n", hidden=True, min=1, help="Old name of --rows.")]
OldFractionsOpt = Annotated[str | None, typer.Option("--fractions", hidden=True, help="Old name of --norm-fractions.")]


def _floats(text: str | None, flag: str) -> list[float] | None:
    from em_cli.errors import UsageError

    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"bad {flag} {text!r}", hint="comma-separated numbers, e.g. 0,0.5,1,2") from None
    if not values:
        raise UsageError(f"{flag} is empty")
    return values


def _open(ctx: typer.Context, require_chat: bool, controls: int = 0) -> OpenedBench:
    """The solutions of the command line on the base model of its model flags; notes to stderr."""
    from em_cli.comparison.session import open_bench

    p = ctx.params
    options = model_options(p["model"], None, p["dtype"], p["device"], p["load_in_4bit"], require_chat=require_chat)
    opened = open_bench(_solutions(ctx), options, controls, p["seed"])
    for warning in opened.warnings:
        out.warn(warning)
    for note in opened.notes:
        out.log(note)
    return opened


def _solutions(ctx: typer.Context) -> list[str]:
    return [*(ctx.params["solutions"] or []), *(ctx.params["more"] or [])]


def _settings(ctx: typer.Context, **resolved: Any) -> dict[str, Any]:
    """The run's settings for the report and manifest: every flag, with defaults resolved."""
    hidden = {"more", "json_", "output", "old_rows", "old_fractions", "old_seeds", "old_max_tokens"}
    settings = {name: value for name, value in ctx.params.items() if name not in hidden}
    return settings | {"solutions": _solutions(ctx)} | resolved


def _finish(run: MetricRun, output: str, inputs: list[str], plot: Any, json_: bool) -> None:
    written = run.write(output, inputs, run.settings.get("seed"), plot)
    out.log(f"wrote {', '.join(str(p) for p in written.values())}")
    if json_:
        out.json(run.to_dict())


@app.command("efficiency")
def efficiency(
    ctx: typer.Context,
    more: MoreSolutionsArg = None,
    solutions: SolutionsOpt = None,
    data: DataOpt = ...,
    output: OutDirOpt = ...,
    rows: RowsOpt = 100,
    random_controls: ControlsOpt = 0,
    quick: QuickOpt = False,
    scales: Annotated[str | None, typer.Option(
        "--scales", help="Scales of each solution's own norm, comma-separated (default 0,0.25,…,2).")] = None,
    norm_fractions: NormFractionsOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 8,
    max_length: MaxLengthOpt = 512,
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    json_: JsonOpt = False,
    old_rows: OldRowsOpt = None,
    old_fractions: OldFractionsOpt = None,
) -> None:
    """Loss of each solution vs its scale, and of all of them at equal norms.

    Relative sweep: s × own norm, s ∈ 0..2 (s = 0 is the base model exactly, s = 1 the
    solution). Equal norms: p × the mean norm of the solutions of one kind, p ∈ 0.2..2
    (docs/METHODS.md §6). Norms: ‖alpha·v‖ for vectors, mean over modules of ‖B·A‖_F for adapters.

    Example: em compare efficiency -m M --solutions general=runs/g narrow=runs/n --data train.jsonl -o cmp/
    """
    from em_cli.comparison import efficiency as metric
    from em_cli.comparison.plots import plot_efficiency
    from em_cli.comparison.session import MetricRun, loss_evaluator

    started = time.time()
    rows = renamed(rows, old_rows, "-n", "--rows")
    grid = _floats(scales, "--scales") or list(metric.QUICK_SCALES if quick else metric.RELATIVE_SCALES)
    targets = (_floats(renamed(norm_fractions, old_fractions, "--fractions", "--norm-fractions"), "--norm-fractions")
               or list(metric.QUICK_FRACTIONS if quick else metric.NORM_FRACTIONS))
    opened = _open(ctx, True, random_controls)
    loss_rows, evaluate = loss_evaluator(opened.loaded, data, rows, seed, max_length, batch_size, out.warn)
    total = metric.planned_evaluations(len(opened.bench.names), grid, targets)
    measured = time.perf_counter()
    with RowProgress(total, "loss evaluations") as progress:
        result = metric.measure_efficiency(opened.bench, evaluate, grid, targets,
                                           on_evaluation=lambda: progress.advance(1))
    seconds = time.perf_counter() - measured
    run = MetricRun("efficiency", opened, _settings(ctx, rows=rows, scales=grid, norm_fractions=targets), result,
                    result.evaluations, started,
                    extra={"data": loss_rows.describe(), "wall_time_s": round(seconds, 3),
                           "seconds_per_evaluation": round(seconds / max(result.evaluations, 1), 4)})
    _finish(run, output, [data], plot_efficiency, json_)
    out.log(f"{result.evaluations} loss evaluations in {seconds:.1f}s "
            f"({seconds / max(result.evaluations, 1):.2f}s each)")
    if not json_:
        bench = opened.bench
        shown = [s for s in grid if s in (0.0, 1.0, max(grid))]
        out.table(["solution", "kind", "norm", *[f"loss s={s:g}" for s in shown]],
                  [[name, bench.handles[name].kind, bench.handles[name].norm,
                    *[result.relative[name][grid.index(s)] for s in shown]] for name in bench.names],
                  title=f"Efficiency (base loss {result.base_loss:.4f})")


@app.command("stability")
def stability(
    ctx: typer.Context,
    more: MoreSolutionsArg = None,
    solutions: SolutionsOpt = None,
    data: DataOpt = ...,
    output: OutDirOpt = ...,
    rows: RowsOpt = 100,
    quick: QuickOpt = False,
    epsilons: Annotated[str | None, typer.Option(
        "--epsilons", help="Noise fractions ε (default 0.01,0.05,0.1,0.2,…,1.0).")] = None,
    draws: Annotated[int | None, typer.Option("--draws", min=1, help="Noise draws per ε (default 10).")] = None,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 8,
    max_length: MaxLengthOpt = 512,
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    json_: JsonOpt = False,
    old_rows: OldRowsOpt = None,
    old_seeds: Annotated[int | None, typer.Option("--seeds", hidden=True, min=1, help="Old name of --draws.")] = None,
) -> None:
    """Relative loss increase of each solution under norm-preserving orthogonal noise.

    x′ = √(1−ε²)x + εy per vector, or per LoRA A and B matrix; 100·(L_perturbed − L_orig) /
    (L_base − L_orig): 0% = as trained, 100% = base model; mean ± std over draws (docs/METHODS.md §6).
    Each point also records the measured cosine between the perturbed and the original
    solution — for adapters of B·A (≈ 1−ε², not √(1−ε²)) — which the plot uses as its x-axis.
    One model load and #ε × #draws × #solutions + 1 + #solutions loss evaluations.

    Example: em compare stability -m M --solutions general=runs/g narrow=runs/n --data train.jsonl -o cmp/
    """
    from em_cli.comparison import stability as metric
    from em_cli.comparison.plots import plot_stability
    from em_cli.comparison.session import MetricRun, loss_evaluator
    from em_cli.errors import UsageError

    started = time.time()
    rows = renamed(rows, old_rows, "-n", "--rows")
    grid = _floats(epsilons, "--epsilons") or list(metric.QUICK_EPSILONS if quick else metric.EPSILONS)
    if any(not 0.0 <= e <= 1.0 for e in grid):
        raise UsageError("--epsilons must lie in [0, 1]")
    draws = renamed(draws, old_seeds, "--seeds", "--draws") or (metric.QUICK_SEEDS if quick else metric.SEEDS)
    opened = _open(ctx, True)
    bench = opened.bench
    loss_rows, evaluate = loss_evaluator(opened.loaded, data, rows, seed, max_length, batch_size, out.warn)
    total = metric.planned_evaluations(len(bench.names), grid, draws)
    out.log(f"{len(grid)} ε × {draws} draws × {len(bench.names)} solutions + {1 + len(bench.names)} baselines = "
            f"{total} loss evaluations")
    measured = time.perf_counter()
    with RowProgress(total, "loss evaluations") as progress:
        result = metric.measure_stability(bench, bench.names, evaluate, grid, draws, seed,
                                          on_evaluation=lambda: progress.advance(1))
    seconds = time.perf_counter() - measured
    for name, curve in result.curves.items():
        if curve.gap <= 0:
            out.warn(f"{name} does not beat the base model on this data (L_base − L_orig = {curve.gap:.4g}): "
                     "its relative increase is undefined (null)")
    run = MetricRun("stability", opened, _settings(ctx, rows=rows, epsilons=grid, draws=draws), result,
                    result.evaluations, started,
                    extra={"data": loss_rows.describe(), "planned_evaluations": result.planned_evaluations,
                           "evaluator_calls": evaluate.calls, "wall_time_s": round(seconds, 3),
                           "seconds_per_evaluation": round(seconds / max(result.evaluations, 1), 4),
                           "relative_increase": "100·(L_perturbed − L_orig)/(L_base − L_orig); "
                                                "std: sample std over draws"})
    _finish(run, output, [data], plot_stability, json_)
    out.log(f"measured wall time: {seconds:.1f}s for {result.evaluations} loss evaluations "
            f"({seconds / max(result.evaluations, 1):.2f}s each)")
    if not json_:
        shown = _some(grid, (0.1, 0.5, 1.0))
        table_rows = []
        for name, curve in result.curves.items():
            cells = [(f"{curve.mean[i]:.1f}±{curve.std[i]:.1f}" + _cos(curve.cosine_mean[i]))
                     if curve.mean[i] is not None else None for i in shown]
            table_rows.append([name, curve.original_loss, curve.gap, *cells])
        out.table(["solution", "L_orig", "L_base−L_orig", *[f"ε={grid[i]:g}" for i in shown]], table_rows,
                  title=f"Stability: relative loss increase %, mean ± std, at the measured cosine to the original "
                        f"(base loss {result.base_loss:.4f})")


@app.command("kl")
def kl(
    ctx: typer.Context,
    more: MoreSolutionsArg = None,
    solutions: SolutionsOpt = None,
    output: OutDirOpt = ...,
    text: Annotated[str | None, typer.Option(
        "--text", help="Pre-training-style text: .txt (blank-line-separated texts) or .jsonl (`text` field).")] = None,
    hf_dataset: Annotated[str | None, typer.Option(
        "--hf-dataset", help="A `datasets` dataset with a `text` column: a directory written by save_to_disk "
                             "(offline), or a hub NAME / NAME:CONFIG streamed from the hub (e.g. "
                             "HuggingFaceFW/fineweb:sample-10BT; needs internet).")] = None,
    hf_split: Annotated[str, typer.Option("--hf-split", help="Split of --hf-dataset (of a saved DatasetDict).")
                        ] = "train",
    texts: Annotated[int | None, typer.Option("--texts", min=1, help="How many texts (default 50; --quick 8).")
                     ] = None,
    text_tokens: Annotated[int | None, typer.Option(
        "--text-tokens", min=4, help="Tokens per text (default: 128 sampled, 512 from --text/--hf-dataset).")] = None,
    prompt_tokens: Annotated[int, typer.Option(
        "--prompt-tokens", min=1, help="Adapters with --text/--hf-dataset: prefix tokens the base model continues.")
                             ] = 32,
    multiples: Annotated[str | None, typer.Option(
        "--multiples", help="Norms as multiples of each solution's own norm (default 0,0.25,0.5,1,1.5,2,3,4,5).")
                         ] = None,
    norm_fractions: NormFractionsOpt = None,
    random_controls: ControlsOpt = 0,
    quick: QuickOpt = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 4,
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    json_: JsonOpt = False,
    old_fractions: OldFractionsOpt = None,
    old_max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", hidden=True, min=4, help="Old name of --text-tokens.")] = None,
) -> None:
    """KL(P_base ‖ P_steered) on pre-training-style text across a norm grid.

    Per non-padding token, for each solution at multiples of its own norm and for
    norm-matched random controls (docs/METHODS.md §6), and at equal norms: every solution of
    one kind at the same absolute targets, so their KLs compare directly (--norm-fractions,
    default 0.5,1,2,5; --quick 1,5). Text: --text, --hf-dataset, or by default text sampled
    from the base model itself (no chat template; labelled as such — it is not pre-training
    text). Adapters are measured on the base model's own continuations. The output names the
    text it measured on.

    Example: em compare kl -m M --solutions general=runs/g narrow=runs/n --random-controls 3 -o cmp/
    """
    from em_cli.comparison import pretraining_kl as metric
    from em_cli.comparison.plots import plot_kl
    from em_cli.comparison.session import MetricRun
    from em_cli.comparison.texts import external_texts

    started = time.time()
    text_tokens = renamed(text_tokens, old_max_tokens, "--max-tokens", "--text-tokens")
    grid = _floats(multiples, "--multiples") or list(metric.QUICK_MULTIPLES if quick else metric.NORM_MULTIPLES)
    targets = (_floats(renamed(norm_fractions, old_fractions, "--fractions", "--norm-fractions"), "--norm-fractions")
               or list(metric.QUICK_EQUAL_NORM_FRACTIONS if quick else metric.EQUAL_NORM_FRACTIONS))
    count = texts or (8 if quick else 50)
    external = external_texts(text, hf_dataset, hf_split, count)
    opened = _open(ctx, False, random_controls)
    bench = opened.bench
    has_adapters = any(h.kind == "adapter" for h in bench.handles.values())
    to_sample = count if external is None else (len(external[0]) if has_adapters else 0)
    sampling_started = time.perf_counter()
    with RowProgress(to_sample, "sampling base-model text") as progress:
        groups = metric.text_groups(bench, external, count, text_tokens, prompt_tokens, seed, batch_size,
                                    on_batch=progress.advance)
    sampling_seconds = time.perf_counter() - sampling_started
    batches = [(-(-len(g[0].texts) // batch_size), len(g[1])) for g in groups]
    total = metric.planned_forward_passes(batches, grid, targets)
    measured = time.perf_counter()
    with RowProgress(total, "forward passes") as progress:
        result = metric.measure_kl(bench, groups, grid, batch_size, on_forward=lambda: progress.advance(1),
                                   fractions=targets)
    seconds = time.perf_counter() - measured
    labels = "; ".join(dict.fromkeys(t.get("label", t.get("kind", "?")) for t in result.text_sets))
    run = MetricRun("kl", opened, _settings(ctx, texts=count, text_tokens=text_tokens, multiples=grid,
                                            norm_fractions=targets), result, result.forward_passes, started,
                    extra={"text": labels, "text_source": result.text_sets,
                           "wall_time_s": round(seconds + sampling_seconds, 3),
                           "sampling_time_s": round(sampling_seconds, 3),
                           "kl_definition": "per-token mean of KL(P_base ‖ P_steered) in nats over scored "
                                            "non-padding positions"})
    _finish(run, output, [text] if text else [], plot_kl, json_)
    out.log(f"text: {labels}; {result.forward_passes} forward passes in "
            f"{seconds:.1f}s (+{sampling_seconds:.1f}s sampling text)")
    if not json_:
        shown = _some(grid, (0.0, 1.0, 2.0, 5.0))
        out.table(["solution", "kind", "norm", *[f"×{grid[i]:g}" for i in shown]],
                  [[c.name, c.kind, c.own_norm, *[f"{c.kl[i]:.3g}" for i in shown]] for c in result.curves.values()],
                  title=f"Pre-training KL per token (nats) at multiples of each solution's own norm — text: {labels}")
        for sweep in result.equal_norm:
            unit = "‖alpha·v‖" if sweep.kind == "vector" else "mean ‖B·A‖_F"
            out.table(["solution", *[f"{t:.4g} (p={p:g})" for p, t in zip(sweep.fractions, sweep.targets, strict=True)]],
                      [[name, *[f"{v:.3g}" for v in values]] for name, values in sweep.kl.items()],
                      title=f"KL per token (nats) at equal norms ({sweep.kind}s: {unit} = p × "
                            f"{sweep.reference_norm:.4g})")


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


def _cos(value: float | None) -> str:
    return f" (cos {value:.3f})" if value is not None else ""


def _some(grid: list[float], wanted: tuple[float, ...]) -> list[int]:
    """Indices of the grid values to show in a compact table (the JSON has them all)."""
    if len(grid) <= len(wanted):
        return list(range(len(grid)))
    picked = [grid.index(w) for w in wanted if w in grid]
    return picked or [0, len(grid) // 2, len(grid) - 1]
