"""What the `em compare` subcommands share: option types, opening the solutions, writing a run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from em_cli.commands._options import BatchSizeOpt, SeedOpt, option_group, renamed
from em_cli.commands._output import out

if TYPE_CHECKING:
    from em_cli.comparison.metric_runs import LossData, Solutions
    from em_cli.comparison.session import MetricRun

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

# The solutions compared and the directory the run writes (every comparison of solutions).
COMPARED = option_group(more=(MoreSolutionsArg, None), solutions=(SolutionsOpt, None), output=(OutDirOpt, ...))
# The rows a loss is measured on (efficiency, stability).
LOSS_DATA = option_group(data=(DataOpt, ...), rows=(RowsOpt, 100), seed=(SeedOpt, 0), batch_size=(BatchSizeOpt, 8),
                         max_length=(MaxLengthOpt, 512), old_rows=(OldRowsOpt, None))


def loss_data(flags: dict[str, Any]) -> LossData:
    """The LOSS_DATA group's values as the library takes them."""
    from em_cli.comparison.metric_runs import LossData

    rows = renamed(flags["rows"], flags["old_rows"], "-n", "--rows")
    return LossData(flags["data"], rows, flags["seed"], flags["max_length"], flags["batch_size"])


def floats(text: str | None, flag: str) -> list[float] | None:
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


def solutions_of(ctx: typer.Context, require_chat: bool, controls: int = 0) -> Solutions:
    """The solutions of the command line, on the base model of its model flags."""
    from em_cli.comparison.metric_runs import Solutions
    from em_cli.models.loading import LoadOptions

    p = ctx.params
    options = LoadOptions.from_options(p, require_chat=require_chat)
    return Solutions(solution_specs(ctx), options, controls, p["seed"])


def solution_specs(ctx: typer.Context) -> list[str]:
    return [*(ctx.params["solutions"] or []), *(ctx.params["more"] or [])]


def run_settings(ctx: typer.Context) -> dict[str, Any]:
    """The run's settings for the report and manifest: every flag (the library adds the resolved defaults)."""
    hidden = {"more", "json_", "output", "old_rows", "old_fractions", "old_seeds", "old_max_tokens"}
    settings = {name: value for name, value in ctx.params.items() if name not in hidden}
    return settings | {"solutions": solution_specs(ctx)}


def finish_run(run: MetricRun, output: str, inputs: list[str], plot: Any, json_: bool) -> None:
    written = run.write(output, inputs, run.settings.get("seed"), plot)
    out.log(f"wrote {', '.join(str(p) for p in written.values())}")
    if json_:
        out.json(run.to_dict())


def cos_note(value: float | None) -> str:
    return f" (cos {value:.3f})" if value is not None else ""


def some_columns(grid: list[float], wanted: tuple[float, ...]) -> list[int]:
    """Indices of the grid values to show in a compact table (the JSON has them all)."""
    if len(grid) <= len(wanted):
        return list(range(len(grid)))
    picked = [grid.index(w) for w in wanted if w in grid]
    return picked or [0, len(grid) // 2, len(grid) - 1]
