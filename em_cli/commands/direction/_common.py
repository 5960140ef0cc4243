"""What the `em direction` subcommands share: option types and per-layer tables."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from em_cli.commands._output import out

PoolingOpt = Annotated[Literal["response", "token"], typer.Option(
    "--pooling", help="How each set's mean weighs its records. response: every response's mean weighs the same "
                      "(a long answer counts once); token: every response token weighs the same (long answers "
                      "count more). Recorded as `pooling` in the direction file.")]
PrimaryLayerOpt = Annotated[int | None, typer.Option(
    "--primary-layer", help="Record this layer as the file's primary one: `em steer --ablate` then removes its "
                            "direction at every layer (default there: the middle of the file's layers).")]


OldGgufOpt = Annotated[bool, typer.Option("--gguf", hidden=True, help="Accepted and ignored: GGUF is the only format.")]


def per_layer_rows(rows: list[dict], columns: list[str], json_: bool) -> None:
    """Per-layer (or per-component) rows: JSON with --json, else a table of `columns`."""
    if json_:
        out.json(rows)
        return
    out.table(columns, [[row[c] for c in columns] for row in rows], float_format=".4f")
