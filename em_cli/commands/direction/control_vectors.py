"""`em direction export|import`: llama.cpp control vectors (GGUF)."""

from __future__ import annotations

from typing import Annotated

import typer

from em_cli.commands._output import out
from em_cli.commands.direction import app
from em_cli.commands.direction._common import OldGgufOpt


@app.command("export")
def export(
    path: Annotated[str, typer.Argument(help="Direction file.")],
    output: Annotated[str, typer.Option("-o", "--output", help="llama.cpp control vector (.gguf).")],
    gguf: OldGgufOpt = False,
    layers: Annotated[str | None, typer.Option(
        "--layers", "--layer", help="Write only these layers of the file: '15', '10,12', '10-20' or 'all' "
                                    "(default all).")] = None,
    scale: Annotated[float, typer.Option("--scale", help="Multiply the vectors before writing.")] = 1.0,
    model_hint: Annotated[str, typer.Option("--model-hint", help="controlvector.model_hint (e.g. llama).")
                          ] = "llama",
) -> None:
    """Export a direction as a llama.cpp control vector (`direction.N` per layer, N ≥ 1).

    llama.cpp adds tensor direction.N to the output of block N (0-based, the same layer
    numbers as `em`), at every layer the file holds unless told otherwise. A direction file
    usually holds every layer, so export only the layers you mean to steer, or limit them in
    llama.cpp; for layers A..B both ways agree:

      em direction export d.safetensors --layers 15 -o d15.gguf

      llama-cli -m model.gguf --control-vector d15.gguf --control-vector-layer-range 15 15

    (--control-vector-layer-range A B is inclusive; --control-vector-scaled applies a scale.)

    Example: em direction export direction.safetensors --layers 10-20 -o caps.gguf
    """
    from em_cli.models.layers import parse_layers
    from em_cli.vectors import SteeringVector

    direction = SteeringVector.load(path)
    direction.check_finite(path)
    # Bounded by the file, not by a model: export_gguf names the layers the file lacks.
    wanted = parse_layers(layers, 1 << 20) if layers and layers.strip().lower() != "all" else None
    written = direction.export_gguf(output, model_hint, scale, wanted)
    if written.skipped:
        out.warn("layer 0 cannot be represented in a llama.cpp control vector (no direction.0); it was left out")
    out.log(f"control vector with {len(written.layers)} layers → {output}")
    out.log(f"llama.cpp: {written.llama_cpp_flags()}")


@app.command("import")
def import_(
    path: Annotated[str, typer.Argument(help="llama.cpp control vector (.gguf).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Direction file to write.")],
    gguf: OldGgufOpt = False,
) -> None:
    """Import a llama.cpp control vector as a direction file.

    Example: em direction import caps.gguf -o caps.safetensors
    """
    from em_cli.vectors import SteeringVector

    direction = SteeringVector.import_gguf(path)
    direction.save(output)
    out.log(f"{len(direction.layers)} layers → {output}")
