"""`em compare`: efficiency, stability and pre-training KL of solutions, and judged runs side by side."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from em_cli.commands._options import (BatchSizeOpt, DeviceOpt, DtypeOpt, JsonOpt, Load4bitOpt, ModelOpt,
                                      SeedOpt, model_options)
from em_cli.commands._output import RowProgress, emit_json, log, warn
from em_cli.comparison.bench import NORM_DEFINITION
from em_cli.models.source import DEFAULT_MODEL

if TYPE_CHECKING:
    from em_cli.comparison.bench import SolutionBench
    from em_cli.models.loading import LoadedModel

app = typer.Typer(help="Efficiency, stability and pre-training KL of two solutions, with plots.",
                  no_args_is_help=True)

MoreSolutionsArg = Annotated[list[str] | None, typer.Argument(
    metavar="NAME=PATH", show_default=False,
    help="More solutions, so that `--solutions a=runs/a b=runs/b` works.")]
SolutionsOpt = Annotated[list[str] | None, typer.Option(
    "--solutions", "-s", show_default=False,
    help="NAME=PATH: a run dir of `em finetune` (adapter/ or vector.safetensors), a vector file or an adapter dir. "
         "All of one base model.")]
DataOpt = Annotated[str, typer.Option("--data", help="Chat JSONL the loss is measured on (the finetuning data).")]
OutDirOpt = Annotated[str, typer.Option("-o", "--output", help="Output directory (JSON, PNG, manifest).")]
RowsOpt = Annotated[int, typer.Option("-n", "--rows", min=1, help="Seeded rows of --data for the loss.")]
ControlsOpt = Annotated[int, typer.Option(
    "--random-controls", min=0, help="K norm-matched random controls per solution (seeded).")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="A small grid for smoke checks.")]
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=8, help="Truncate conversations to this many tokens.")]


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


def _open_bench(items: list[str], model: str, dtype: str, device: str, load_in_4bit: bool, require_chat: bool,
                controls: int = 0, seed: int = 0) -> tuple[LoadedModel, SolutionBench]:
    """Parse the solutions, load the base model once, put every solution (and controls) on it."""
    from em_cli.comparison.bench import SolutionBench, parse_solution_args
    from em_cli.models.loading import load_model

    specs = parse_solution_args(items)
    loaded = load_model(model_options(model, None, dtype, device, load_in_4bit, require_chat=require_chat))
    if loaded.cache_note:
        log(loaded.cache_note)
    bench = SolutionBench(loaded)
    for spec in specs:
        bench.add(spec)
    for spec in specs:
        bench.add_random_controls(spec.name, controls, seed)
    note = bench.scaling_note()
    if note:
        warn(note)
    for handle in bench.handles.values():
        if not handle.control_of:
            log(f"{handle.name}: {handle.kind}, norm {handle.norm:.4g}")
    return loaded, bench


def _loss(loaded: LoadedModel, data: str, rows: int, seed: int, max_length: int, batch_size: int):
    from em_cli.comparison.loss import LossEvaluator, load_loss_rows
    from em_cli.models.batching import pad_token_id
    from em_cli.sampling import stop_token_ids

    tokenizer = loaded.tokenizer
    loss_rows = load_loss_rows(data, tokenizer, stop_token_ids(loaded.model, tokenizer), rows, seed, max_length)
    if len(loss_rows.examples) < rows:
        warn(f"{data} has {len(loss_rows.examples)} usable rows, fewer than --rows {rows}: using them all")
    return loss_rows, LossEvaluator(loss_rows, pad_token_id(tokenizer), batch_size)


def _manifest(command: str, options: dict[str, Any], inputs: list[str], seed: int | None, started: float):
    from em_cli.artifacts.manifest import Manifest

    return Manifest(command=command, options=options, inputs=inputs, seed=seed, started=started)


def _finish(outdir: str, metric: str, report: dict[str, Any], manifest: Any, plot: Any, json_: bool) -> None:
    from em_cli.comparison.report import write_report

    manifest.results = {key: report[key] for key in ("wall_time_s", "evaluations") if key in report}
    written = write_report(outdir, metric, report, manifest, plot)
    log(f"wrote {', '.join(str(p) for p in written.values())}")
    if json_:
        emit_json(report)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*[f"{v:.5g}" if isinstance(v, float) else ("–" if v is None else str(v)) for v in row])
    Console().print(table)


@app.command("efficiency")
def efficiency(
    more: MoreSolutionsArg = None,
    solutions: SolutionsOpt = None,
    data: DataOpt = ...,
    output: OutDirOpt = ...,
    rows: RowsOpt = 100,
    random_controls: ControlsOpt = 0,
    quick: QuickOpt = False,
    scales: Annotated[str | None, typer.Option("--scales", help="Relative scales (default 0,0.25,…,2).")] = None,
    fractions: Annotated[str | None, typer.Option(
        "--fractions", help="Equal-norm targets as fractions of the mean norm (default 0.2,0.4,…,2).")] = None,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 8,
    max_length: MaxLengthOpt = 512,
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Loss of each solution vs its scale, and of all of them at equal norms.

    Relative sweep: s × own norm, s ∈ 0..2 (s = 0 is the base model exactly, s = 1 the
    solution). Equal norms: p × the mean norm of the solutions of one kind, p ∈ 0.2..2
    (docs/METHODS.md §6). Norms: ‖alpha·v‖ for vectors, mean over modules of ‖B·A‖_F for adapters.

    Example: em compare efficiency -m M --solutions general=runs/g narrow=runs/n --data train.jsonl -o cmp/
    """
    from em_cli.comparison import efficiency as metric
    from em_cli.comparison.plots import plot_efficiency

    started = time.time()
    grid = _floats(scales, "--scales") or list(metric.QUICK_SCALES if quick else metric.RELATIVE_SCALES)
    targets = _floats(fractions, "--fractions") or list(metric.QUICK_FRACTIONS if quick else metric.NORM_FRACTIONS)
    loaded, bench = _open_bench([*(solutions or []), *(more or [])], model, dtype, device, load_in_4bit, True,
                                random_controls, seed)
    loss_rows, evaluate = _loss(loaded, data, rows, seed, max_length, batch_size)
    total = metric.planned_evaluations(len(bench.names), grid, targets)
    measured = time.perf_counter()
    with RowProgress(total, "loss evaluations") as progress:
        result = metric.measure_efficiency(bench, evaluate, grid, targets, on_evaluation=lambda: progress.advance(1))
    seconds = time.perf_counter() - measured
    options = {"model": model, "solutions": [*(solutions or []), *(more or [])], "data": data, "rows": rows,
               "random_controls": random_controls, "quick": quick, "scales": grid, "fractions": targets, "seed": seed,
               "batch_size": batch_size, "max_length": max_length, "dtype": dtype, "device": device,
               "load_in_4bit": load_in_4bit}
    report = {"metric": "efficiency", "model": loaded.identity(), "solutions": bench.describe(),
              "data": loss_rows.describe(), "settings": options, "results": result.to_dict(),
              "evaluations": result.evaluations, "wall_time_s": round(seconds, 3),
              "seconds_per_evaluation": round(seconds / max(result.evaluations, 1), 4),
              "norm_definition": NORM_DEFINITION}
    manifest = _manifest("compare efficiency", options, [data], seed, started)
    _finish(output, "efficiency", report, manifest, plot_efficiency, json_)
    log(f"{result.evaluations} loss evaluations in {seconds:.1f}s ({seconds / max(result.evaluations, 1):.2f}s each)")
    if not json_:
        shown = [s for s in grid if s in (0.0, 1.0, max(grid))]
        columns = ["solution", "kind", "norm", *[f"loss s={s:g}" for s in shown]]
        table_rows = [[name, bench.handles[name].kind, bench.handles[name].norm,
                       *[result.relative[name][grid.index(s)] for s in shown]] for name in bench.names]
        _table(f"Efficiency (base loss {result.base_loss:.4f})", columns, table_rows)


@app.command("stability")
def stability(
    more: MoreSolutionsArg = None,
    solutions: SolutionsOpt = None,
    data: DataOpt = ...,
    output: OutDirOpt = ...,
    rows: RowsOpt = 100,
    quick: QuickOpt = False,
    epsilons: Annotated[str | None, typer.Option(
        "--epsilons", help="Noise fractions ε (default 0.01,0.05,0.1,0.2,…,1.0).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Noise draws per ε (default 10).")] = None,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 8,
    max_length: MaxLengthOpt = 512,
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Relative loss increase of each solution under norm-preserving orthogonal noise.

    x′ = √(1−ε²)x + εy per vector, or per LoRA A and B matrix; 100·(L_perturbed − L_orig) /
    (L_base − L_orig): 0% = as trained, 100% = base model; mean ± std over seeds (docs/METHODS.md §6).
    Each point also records the measured cosine between the perturbed and the original
    solution — for adapters of B·A (≈ 1−ε², not √(1−ε²)) — which the plot uses as its x-axis.
    One model load and #ε × #seeds × #solutions + 1 + #solutions loss evaluations.

    Example: em compare stability -m M --solutions general=runs/g narrow=runs/n --data train.jsonl -o cmp/
    """
    from em_cli.comparison import stability as metric
    from em_cli.comparison.plots import plot_stability
    from em_cli.errors import UsageError

    started = time.time()
    grid = _floats(epsilons, "--epsilons") or list(metric.QUICK_EPSILONS if quick else metric.EPSILONS)
    if any(not 0.0 <= e <= 1.0 for e in grid):
        raise UsageError("--epsilons must lie in [0, 1]")
    draws = seeds or (metric.QUICK_SEEDS if quick else metric.SEEDS)
    loaded, bench = _open_bench([*(solutions or []), *(more or [])], model, dtype, device, load_in_4bit, True)
    loss_rows, evaluate = _loss(loaded, data, rows, seed, max_length, batch_size)
    total = metric.planned_evaluations(len(bench.names), grid, draws)
    log(f"{len(grid)} ε × {draws} seeds × {len(bench.names)} solutions + {1 + len(bench.names)} baselines = "
        f"{total} loss evaluations")
    measured = time.perf_counter()
    with RowProgress(total, "loss evaluations") as progress:
        result = metric.measure_stability(bench, bench.names, evaluate, grid, draws, seed,
                                          on_evaluation=lambda: progress.advance(1))
    seconds = time.perf_counter() - measured
    for name, curve in result.curves.items():
        if curve.gap <= 0:
            warn(f"{name} does not beat the base model on this data (L_base − L_orig = {curve.gap:.4g}): "
                 "its relative increase is undefined (null)")
    options = {"model": model, "solutions": [*(solutions or []), *(more or [])], "data": data, "rows": rows,
               "quick": quick, "epsilons": grid, "seeds": draws, "seed": seed, "batch_size": batch_size,
               "max_length": max_length, "dtype": dtype, "device": device, "load_in_4bit": load_in_4bit}
    report = {"metric": "stability", "model": loaded.identity(), "solutions": bench.describe(),
              "data": loss_rows.describe(), "settings": options, "results": result.to_dict(),
              "evaluations": result.evaluations, "planned_evaluations": result.planned_evaluations,
              "evaluator_calls": evaluate.calls, "wall_time_s": round(seconds, 3),
              "seconds_per_evaluation": round(seconds / max(result.evaluations, 1), 4),
              "relative_increase": "100·(L_perturbed − L_orig)/(L_base − L_orig); std: sample std over seeds",
              "norm_definition": NORM_DEFINITION}
    manifest = _manifest("compare stability", options, [data], seed, started)
    _finish(output, "stability", report, manifest, plot_stability, json_)
    log(f"measured wall time: {seconds:.1f}s for {result.evaluations} loss evaluations "
        f"({seconds / max(result.evaluations, 1):.2f}s each)")
    if not json_:
        shown = _some(grid, (0.1, 0.5, 1.0))
        columns = ["solution", "L_orig", "L_base−L_orig", *[f"ε={grid[i]:g}" for i in shown]]
        table_rows = []
        for name, curve in result.curves.items():
            cells = [(f"{curve.mean[i]:.1f}±{curve.std[i]:.1f}" + _cos(curve.cosine_mean[i]))
                     if curve.mean[i] is not None else None for i in shown]
            table_rows.append([name, curve.original_loss, curve.gap, *cells])
        _table(f"Stability: relative loss increase %, mean ± std, at the measured cosine to the original "
               f"(base loss {result.base_loss:.4f})", columns, table_rows)


@app.command("kl")
def kl(
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
    max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", min=4, help="Tokens per text (default: 128 sampled, 512 from --text/--hf-dataset).")] = None,
    prompt_tokens: Annotated[int, typer.Option(
        "--prompt-tokens", min=1, help="Adapters with --text/--hf-dataset: prefix tokens the base model continues.")
                             ] = 32,
    multiples: Annotated[str | None, typer.Option(
        "--multiples", help="Norms as multiples of each solution's own norm (default 0,0.25,0.5,1,1.5,2,3,4,5).")
                         ] = None,
    fractions: Annotated[str | None, typer.Option(
        "--fractions", help="Equal norms: every solution of a kind at p × the mean norm of that kind's solutions "
                            "(default 0.5,1,2,5; --quick 1,5).")] = None,
    random_controls: ControlsOpt = 0,
    quick: QuickOpt = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 4,
    model: ModelOpt = DEFAULT_MODEL,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
    json_: JsonOpt = False,
) -> None:
    """KL(P_base ‖ P_steered) on pre-training-style text across a norm grid.

    Per non-padding token, for each solution at multiples of its own norm and for
    norm-matched random controls (docs/METHODS.md §6), and at equal norms: every solution of
    one kind at the same absolute targets, so their KLs compare directly. Text: --text,
    --hf-dataset, or by default text sampled from the base model itself (no chat template;
    labelled as such — it is not pre-training text). Adapters are measured on the base
    model's own continuations. The output names the text it measured on.

    Example: em compare kl -m M --solutions general=runs/g narrow=runs/n --random-controls 3 -o cmp/
    """
    from em_cli.comparison import pretraining_kl as metric
    from em_cli.comparison.plots import plot_kl
    from em_cli.comparison.texts import external_texts

    started = time.time()
    grid = _floats(multiples, "--multiples") or list(metric.QUICK_MULTIPLES if quick else metric.NORM_MULTIPLES)
    targets = _floats(fractions, "--fractions") or list(metric.QUICK_EQUAL_NORM_FRACTIONS if quick
                                                         else metric.EQUAL_NORM_FRACTIONS)
    count = texts or (8 if quick else 50)
    external = external_texts(text, hf_dataset, hf_split, count)
    loaded, bench = _open_bench([*(solutions or []), *(more or [])], model, dtype, device, load_in_4bit, False,
                                random_controls, seed)
    has_adapters = any(h.kind == "adapter" for h in bench.handles.values())
    to_sample = count if external is None else (len(external[0]) if has_adapters else 0)
    sampling_started = time.perf_counter()
    with RowProgress(to_sample, "sampling base-model text") as progress:
        groups = metric.text_groups(bench, external, count, max_tokens, prompt_tokens, seed, batch_size,
                                    on_batch=progress.advance)
    sampling_seconds = time.perf_counter() - sampling_started
    batches = [(-(-len(g[0].texts) // batch_size), len(g[1])) for g in groups]
    total = metric.planned_forward_passes(batches, grid, targets)
    measured = time.perf_counter()
    with RowProgress(total, "forward passes") as progress:
        result = metric.measure_kl(bench, groups, grid, batch_size, on_forward=lambda: progress.advance(1),
                                   fractions=targets)
    seconds = time.perf_counter() - measured
    options = {"model": model, "solutions": [*(solutions or []), *(more or [])], "text": text,
               "hf_dataset": hf_dataset, "hf_split": hf_split, "texts": count, "max_tokens": max_tokens,
               "prompt_tokens": prompt_tokens, "multiples": grid, "fractions": targets,
               "random_controls": random_controls, "quick": quick, "seed": seed, "batch_size": batch_size,
               "dtype": dtype, "device": device, "load_in_4bit": load_in_4bit}
    labels = list(dict.fromkeys(t.get("label", t.get("kind", "?")) for t in result.text_sets))
    report = {"metric": "kl", "model": loaded.identity(), "solutions": bench.describe(), "settings": options,
              "text": "; ".join(labels), "text_source": result.text_sets, "results": result.to_dict(),
              "evaluations": result.forward_passes,
              "wall_time_s": round(seconds + sampling_seconds, 3), "sampling_time_s": round(sampling_seconds, 3),
              "kl_definition": "per-token mean of KL(P_base ‖ P_steered) in nats over scored non-padding positions",
              "norm_definition": NORM_DEFINITION}
    manifest = _manifest("compare kl", options, [text] if text else [], seed, started)
    _finish(output, "kl", report, manifest, plot_kl, json_)
    log(f"text: {report['text']}; {result.forward_passes} forward passes in "
        f"{seconds:.1f}s (+{sampling_seconds:.1f}s sampling text)")
    if not json_:
        shown = _some(grid, (0.0, 1.0, 2.0, 5.0))
        columns = ["solution", "kind", "norm", *[f"×{grid[i]:g}" for i in shown]]
        _table(f"Pre-training KL per token (nats) at multiples of each solution's own norm — text: {report['text']}",
               columns, [[c.name, c.kind, c.own_norm, *[f"{c.kl[i]:.3g}" for i in shown]]
                         for c in result.curves.values()])
        for sweep in result.equal_norm:
            unit = "‖alpha·v‖" if sweep.kind == "vector" else "mean ‖B·A‖_F"
            _table(f"KL per token (nats) at equal norms ({sweep.kind}s: {unit} = p × {sweep.reference_norm:.4g})",
                   ["solution", *[f"{t:.4g} (p={p:g})" for p, t in zip(sweep.fractions, sweep.targets, strict=True)]],
                   [[name, *[f"{v:.3g}" for v in values]] for name, values in sweep.kl.items()])


@app.command("runs")
def runs(
    items: Annotated[list[str], typer.Argument(
        metavar="NAME=FILE", help="Judged files (JSONL, CSV or parquet), named.")],
    in_domain: Annotated[str | None, typer.Option(
        "--in-domain", help="Expression selecting in-domain rows, e.g. 'domain == \"cooking\"'; the rest are "
                            "'other'.")] = None,
    comparator: Annotated[str, typer.Option(
        "--comparator", help="EM rule: lt = aligned < 30 (docs/METHODS.md §2), le = aligned ≤ 30 (the authors' "
                             "code).")] = "lt",
    all_variants: Annotated[bool, typer.Option(
        "--all-variants", help="Keep the _json/_template question variants (left out by default).")] = False,
    baseline: Annotated[str | None, typer.Option(
        "--baseline", help="A run NAME: every other run's difference from it on the questions both answered, "
                           "with a paired question-bootstrap interval.")] = None,
    allow_mixed: Annotated[bool, typer.Option(
        "--allow-mixed", help="Compare runs judged by different judge models or prompt versions (refused by "
                              "default).")] = False,
    resamples: Annotated[int, typer.Option("--resamples", min=10, help="Bootstrap resamples.")] = 1000,
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
    from em_cli.comparison.plots import plot_runs
    from em_cli.comparison.runs_table import compare_runs, parse_run_args
    from em_cli.judging.summary import SummaryOptions

    started = time.time()
    named = parse_run_args(items)
    options = SummaryOptions(comparator=comparator, all_variants=all_variants, seed=seed, resamples=resamples,
                             allow_mixed=allow_mixed)
    report = compare_runs(named, in_domain, options, baseline)
    for message in [w for f in report["files"] for w in f["warnings"]] + report["warnings"]:
        warn(message)
    if output:
        settings = {"runs": items, "in_domain": in_domain, "comparator": comparator, "all_variants": all_variants,
                    "baseline": baseline, "allow_mixed": allow_mixed, "resamples": resamples, "seed": seed}
        manifest = _manifest("compare runs", settings, [path for _, path in named], seed, started)
        _finish(output, "runs", report, manifest, plot_runs, False)
    if json_:
        emit_json(report)
        return
    _print_runs(report)


def _print_runs(report: dict[str, Any]) -> None:
    from em_cli.judging.summary import describe_judge

    metrics = list(dict.fromkeys(m for row in report["rows"] for m in row["metrics"] if m not in ("aligned",
                                                                                                   "coherent")))
    with_setting = any(row["setting"] is not None for row in report["rows"])
    columns = ["run", *(["setting"] if with_setting else []), "split", "n", "EM% [CI]", "coherent%",
               *[f"{m} mean (>50%)" for m in metrics]]
    table_rows = []
    for row in report["rows"]:
        cells = [row["run"], *([row["setting"]] if with_setting else []), row["split"], row["rows"],
                 _pct_ci(row["em"]), _pct(row["coherent"])]
        for metric in metrics:
            stats = row["metrics"].get(metric)
            if stats and stats.get("kind") == "label":
                cells.append(" ".join(f"{name} {share['pct']:.0f}%" for name, share in
                                      list(stats["labels"].items())[:3]) or None)
            elif not stats or stats["mean"] is None:
                cells.append(None)
            else:
                share = f" ({stats['share_over_50']:.0f}%)" if stats["share_over_50"] is not None else ""
                cells.append(f"{stats['mean']:.1f}{share}")
        table_rows.append(cells)
    _table(f"Judged runs — EM = {report['em_definition']} (95% Wilson CI; question bootstrap: --json)", columns,
           table_rows)
    judge_rows = []
    for entry in report["files"]:
        for metric in entry["metrics"]:
            who = describe_judge(entry["judges"][metric])
            mixed = " (mixed!)" if entry["judges"][metric]["mixed_modes"] else ""
            judge_rows.append([entry["run"], metric, who["model"], who["prompt"], who["mode"] + mixed])
    _table("Judges", ["run", "metric", "judge model", "prompt", "mode"], judge_rows)
    if report["differences"]:
        diff_rows = [[d["run"], *([d["setting"]] if with_setting else []), d["split"], d["questions"],
                      _diff(d["em"]), _diff(d["coherent"])] for d in report["differences"]]
        _table(f"Difference from {report['baseline']} on shared questions (points; 95% paired question "
               "bootstrap)", ["run", *(["setting"] if with_setting else []), "split", "questions", "ΔEM%",
                              "Δcoherent%"], diff_rows)


def _pct_ci(share: dict[str, Any]) -> str | None:
    if share["pct"] is None:
        return None
    ci = share.get("ci")
    return f"{share['pct']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def _diff(entry: dict[str, Any]) -> str | None:
    if entry["diff"] is None:
        return None
    ci = entry["ci"]
    return f"{entry['diff']:+.1f}" + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci else "")


def _cos(value: float | None) -> str:
    return f" (cos {value:.3f})" if value is not None else ""


def _some(grid: list[float], wanted: tuple[float, ...]) -> list[int]:
    """Indices of the grid values to show in a compact table (the JSON has them all)."""
    if len(grid) <= len(wanted):
        return list(range(len(grid)))
    picked = [grid.index(w) for w in wanted if w in grid]
    return picked or [0, len(grid) // 2, len(grid) - 1]


def _pct(share: dict[str, Any]) -> str | None:
    if share["pct"] is None:
        return None
    return f"{share['pct']:.1f}"
