"""`em steer`: generate while adding or ablating directions; layer × scale sweeps."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from em_cli.commands._options import (MODEL, SAMPLING, BatchSizeOpt, ConfigOpt, LayersOpt, LimitOpt, OutputOpt,
                                      QuestionsOpt, SeedOpt, VariantsOpt, apply_config, with_options)
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress


@with_options(MODEL, SAMPLING)
def steer(
    ctx: typer.Context,
    questions: QuestionsOpt,
    direction: Annotated[list[str] | None, typer.Option(
        "--direction", "-d", help="Direction file to add (repeatable); steered at --layers × --scales.")] = None,
    vector: Annotated[list[str] | None, typer.Option(
        "--vector", help="Trained vector (run dir or file; repeatable): its own layer, scale × its alpha.")] = None,
    layers: LayersOpt = None,
    scales: Annotated[str, typer.Option("--scales", help="Comma-separated scales for the additions.")] = "1",
    steer_positions: Annotated[Literal["all", "prompt", "generated"], typer.Option(
        "--steer-positions", help="Where additions apply: all tokens, prompt only, generated only.")] = "all",
    ablate: Annotated[list[str] | None, typer.Option(
        "--ablate", help="Direction to ablate, h ← h − (h·r̂)r̂ (repeatable); in every setting.")] = None,
    ablate_layers: Annotated[str, typer.Option("--ablate-layers", help="Layers to ablate at (default all).")
                             ] = "all",
    ablate_from: Annotated[int | None, typer.Option(
        "--ablate-from", help="Ablate the direction of this one layer at every --ablate-layers (the paper's "
        "setting). Default: the layer the file records as primary (`em direction diff --primary-layer`), else "
        "the middle of its layers; the choice is printed.")] = None,
    ablate_per_layer: Annotated[bool, typer.Option(
        "--ablate-per-layer", help="Instead, remove each layer's own direction at that layer (not the paper's "
        "setting).")] = False,
    random_controls: Annotated[int, typer.Option(
        "--random-controls", min=0, help="K norm-matched random controls (Gaussian, seeded) for every --direction "
        "and --vector (added the same way) and every --ablate (ablated the same way).")] = 0,
    output: OutputOpt = "-",
    variants: VariantsOpt = "plain",
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = 8,
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    **flags: Any,
) -> None:
    """Generate responses (same rows and provenance as `em generate`) under interventions.
    Every combination of source × layer × scale is one setting; all settings share one
    model load and the same per-row seeds, and each row records its setting. Re-running
    with the same --output resumes.

    Examples:

      em steer --questions everyday-heldout -d caps.safetensors --layers 15 --scales 0,0.5,1,2 -o sweep.jsonl

      em steer --questions general --adapter runs/general/adapter --ablate direction.safetensors -o ablated.jsonl

      em steer --questions general --vector runs/vec --scales 0,1 --random-controls 2 -o vec.jsonl

    ‖scale·v‖ is printed beside the typical activation norm at that layer (the mean per-token
    norm over response tokens, recorded in direction files; docs/METHODS.md §5).
    """
    from em_cli.steering import SteerSettings, run_steer

    result = run_steer(SteerSettings.from_options(apply_config(ctx, config)), log=out.log, progress=RowProgress)
    out.log(result.summary())
