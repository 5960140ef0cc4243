"""`em extract`: residual-stream activations of conversations → activations safetensors."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._options import MODEL, BatchSizeOpt, LayersOpt, LimitOpt, PositionsOpt, with_options
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress


@with_options(MODEL)
def extract(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="JSONL of conversations (`messages`) or responses; - for stdin.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Activations file (.safetensors).")],
    vector: Annotated[str | None, typer.Option("--vector", help="Apply a trained steering vector (run dir or file).")
                      ] = None,
    layers: LayersOpt = None,
    positions: PositionsOpt = "response_mean",
    where: Annotated[str | None, typer.Option("--where", help='Only records matching, e.g. "aligned < 30".')] = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = 8,
    **flags: Any,
) -> None:
    """Take one activation vector per record at the block output of each chosen layer.

    Per record and layer the file holds the mean over the chosen positions, the mean
    per-token norm over them (the typical activation norm of docs/METHODS.md §5) and their count
    (for `em direction diff --pooling token`).

    Examples:

      em extract judged.jsonl --where "aligned < 30 and coherent > 50" -m M --adapter runs/g -o mis.safetensors

      em extract data.jsonl --layers 10-20 --positions last_prompt -o acts.safetensors
    """
    from em_cli.extraction import ExtractSettings, run_extract

    result = run_extract(ExtractSettings.from_options(ctx.params), log=out.log, warn=out.warn, progress=RowProgress)
    out.log(result.summary())
