"""`em direction diff` and `em direction from-judged`: directions from activations or judged answers."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._options import MODEL, BatchSizeOpt, LayersOpt, PositionsOpt, SeedOpt, with_options
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress
from em_cli.commands.direction import app
from em_cli.commands.direction._common import PoolingOpt, PrimaryLayerOpt
from em_cli.directions import ALIGNED, MISALIGNED


@app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="Activations A (e.g. misaligned responses).")],
    b: Annotated[str, typer.Argument(help="Activations B (e.g. aligned responses).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Direction file to write.")],
    pooling: PoolingOpt = "response",
    primary_layer: PrimaryLayerOpt = None,
) -> None:
    """Per-layer mean(A) − mean(B) from two activation files (raw, not normalised).

    The file keeps both inputs' provenance, the typical activation norm per layer (mean
    per-token norm over the response tokens, docs/METHODS.md §5) and the pooling.

    Example: em direction diff mis.safetensors ali.safetensors -o direction.safetensors
    """
    from em_cli.direction_runs import run_diff

    direction = run_diff(a, b, output, pooling, primary_layer)
    out.log(f"direction over {len(direction.layers)} layers ({direction.extra['count_a']} vs "
            f"{direction.extra['count_b']} records, {pooling} pooling) → {output}")


@app.command("from-judged")
@with_options(MODEL)
def from_judged(
    judged: Annotated[str, typer.Argument(help="Judged responses JSONL (from `em judge score`).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Direction file to write.")],
    misaligned: Annotated[str, typer.Option("--misaligned", help="Filter for set A.")] = MISALIGNED,
    aligned: Annotated[str, typer.Option("--aligned", help="Filter for set B.")] = ALIGNED,
    balance: Annotated[bool, typer.Option("--balance/--no-balance", help="Subsample to equal sizes (seeded).")
                       ] = True,
    layers: LayersOpt = None,
    positions: PositionsOpt = "response_mean",
    pooling: PoolingOpt = "response",
    primary_layer: PrimaryLayerOpt = None,
    allow_model_mismatch: Annotated[bool, typer.Option(
        "--allow-model-mismatch", help="Go on when the responses' model fingerprint differs from the loaded "
                                       "--model/--adapter (normally an error).")] = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 8,
    **flags: Any,
) -> None:
    """Select misaligned and aligned responses by their judge scores (docs/METHODS.md §4), extract
    both through the same model, and take the difference of means — one model load.

    The responses must come from the model you load: their `model.fingerprint` is checked
    against --model/--adapter (and --dtype, which the fingerprint includes).

    Example: em direction from-judged judged.jsonl -m M --adapter runs/general -o direction.safetensors
    """
    from em_cli.direction_runs import FromJudgedSettings, run_from_judged
    from em_cli.models.loading import LoadOptions

    settings = FromJudgedSettings(
        judged=judged, output=output, misaligned=misaligned, aligned=aligned, balance=balance, layers=layers,
        positions=positions, pooling=pooling, primary_layer=primary_layer,
        allow_model_mismatch=allow_model_mismatch, seed=seed, batch_size=batch_size,
        load=LoadOptions.from_options(flags))
    result = run_from_judged(settings, log=out.log, warn=out.warn, progress=RowProgress)
    out.log(result.summary())
