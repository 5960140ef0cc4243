"""`em compare kl`: how far each solution moves predictions on text (docs/METHODS.md §6)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._options import BASE_MODEL, BatchSizeOpt, JsonOpt, SeedOpt, renamed, with_options
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress
from em_cli.commands.compare import app
from em_cli.commands.compare._shared import (COMPARED, ControlsOpt, NormFractionsOpt, OldFractionsOpt, QuickOpt,
                                             finish_run, floats, run_settings, solutions_of, some_columns)


@app.command("kl")
@with_options(COMPARED, BASE_MODEL)
def kl(
    ctx: typer.Context,
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
    json_: JsonOpt = False,
    old_fractions: OldFractionsOpt = None,
    old_max_tokens: Annotated[int | None, typer.Option(
        "--max-tokens", hidden=True, min=4, help="Old name of --text-tokens.")] = None,
    **flags: Any,
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
    from em_cli.comparison.metric_runs import run_kl, text_count
    from em_cli.comparison.plots import plot_kl
    from em_cli.comparison.texts import external_texts

    text_tokens = renamed(text_tokens, old_max_tokens, "--max-tokens", "--text-tokens")
    fractions = renamed(norm_fractions, old_fractions, "--fractions", "--norm-fractions")
    grid, targets = floats(multiples, "--multiples"), floats(fractions, "--norm-fractions")
    count = text_count(texts, quick)
    external = external_texts(text, hf_dataset, hf_split, count)
    run = run_kl(solutions_of(ctx, False, random_controls), external, count, text_tokens, prompt_tokens, grid,
                 targets, quick, run_settings(ctx), out, RowProgress)
    finish_run(run, flags["output"], [text] if text else [], plot_kl, json_)
    result, grid, labels = run.result, run.settings["multiples"], run.extra["text"]
    out.log(f"text: {labels}; {result.forward_passes} forward passes in "
            f"{run.extra['wall_time_s'] - run.extra['sampling_time_s']:.1f}s "
            f"(+{run.extra['sampling_time_s']:.1f}s sampling text)")
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
