"""`em compare kl`: how far each solution moves predictions on text (docs/METHODS.md §6)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from em_cli.commands._options import BatchSizeOpt, DeviceOpt, DtypeOpt, JsonOpt, Load4bitOpt, ModelOpt, SeedOpt, renamed
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress
from em_cli.commands.compare import app
from em_cli.commands.compare._shared import (ControlsOpt, MoreSolutionsArg, NormFractionsOpt, OldFractionsOpt,
                                             OutDirOpt, QuickOpt, SolutionsOpt, finish_run, floats, open_solutions,
                                             run_settings, some_columns)
from em_cli.models.source import DEFAULT_MODEL


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
    grid = floats(multiples, "--multiples") or list(metric.QUICK_MULTIPLES if quick else metric.NORM_MULTIPLES)
    targets = (floats(renamed(norm_fractions, old_fractions, "--fractions", "--norm-fractions"), "--norm-fractions")
               or list(metric.QUICK_EQUAL_NORM_FRACTIONS if quick else metric.EQUAL_NORM_FRACTIONS))
    count = texts or (8 if quick else 50)
    external = external_texts(text, hf_dataset, hf_split, count)
    opened = open_solutions(ctx, False, random_controls)
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
    run = MetricRun("kl", opened, run_settings(ctx, texts=count, text_tokens=text_tokens, multiples=grid,
                                            norm_fractions=targets), result, result.forward_passes, started,
                    extra={"text": labels, "text_source": result.text_sets,
                           "wall_time_s": round(seconds + sampling_seconds, 3),
                           "sampling_time_s": round(sampling_seconds, 3),
                           "kl_definition": "per-token mean of KL(P_base ‖ P_steered) in nats over scored "
                                            "non-padding positions"})
    finish_run(run, output, [text] if text else [], plot_kl, json_)
    out.log(f"text: {labels}; {result.forward_passes} forward passes in "
            f"{seconds:.1f}s (+{sampling_seconds:.1f}s sampling text)")
    if not json_:
        shown = some_columns(grid, (0.0, 1.0, 2.0, 5.0))
        out.table(["solution", "kind", "norm", *[f"×{grid[i]:g}" for i in shown]],
                  [[c.name, c.kind, c.own_norm, *[f"{c.kl[i]:.3g}" for i in shown]] for c in result.curves.values()],
                  title=f"Pre-training KL per token (nats) at multiples of each solution's own norm — text: {labels}")
        for sweep in result.equal_norm:
            unit = "‖alpha·v‖" if sweep.kind == "vector" else "mean ‖B·A‖_F"
            out.table(["solution", *[f"{t:.4g} (p={p:g})" for p, t in zip(sweep.fractions, sweep.targets, strict=True)]],
                      [[name, *[f"{v:.3g}" for v in values]] for name, values in sweep.kl.items()],
                      title=f"KL per token (nats) at equal norms ({sweep.kind}s: {unit} = p × "
                            f"{sweep.reference_norm:.4g})")
