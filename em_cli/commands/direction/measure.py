"""`em direction cosine|norm|random|pca|project`: compare, size, control and inspect directions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from em_cli.commands._options import MODEL, BatchSizeOpt, JsonOpt, LayerOpt, PositionsOpt, SeedOpt, with_options
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress
from em_cli.commands.direction import app
from em_cli.commands.direction._common import per_layer_rows


@app.command("cosine")
def cosine(
    a: Annotated[str, typer.Argument(help="Direction file.")],
    b: Annotated[str, typer.Argument(help="Direction file.")],
    json_: JsonOpt = False,
) -> None:
    """Per-layer cosine similarity between two directions (e.g. from two finetunes).

    Example: em direction cosine medical.safetensors sport.safetensors --json
    """
    from em_cli.vectors import SteeringVector

    values = SteeringVector.load(a, kind="direction").cosine(SteeringVector.load(b, kind="direction"))
    rows = [{"layer": layer, "cosine": value} for layer, value in values.items()]
    per_layer_rows(rows, ["layer", "cosine"], json_)


@app.command("norm")
def norm(
    path: Annotated[str, typer.Argument(help="Direction or vector file.")],
    json_: JsonOpt = False,
) -> None:
    """Per-layer norms, with the typical activation norm at that layer when recorded.

    typical_norm is the mean per-token activation norm over response tokens (docs/METHODS.md §5);
    ratio = norm / typical_norm. mean_vector_norm (--json) is the smaller norm of
    per-response mean vectors, kept for reference.

    Example: em direction norm direction.safetensors
    """
    from em_cli.vectors import SteeringVector

    direction = SteeringVector.load(path)
    typical = direction.typical_norms()
    vector_norms = direction.mean_vector_norms()
    rows = [{"layer": layer, "norm": value, "typical_norm": typical.get(layer, float("nan")),
             "ratio": value / typical[layer] if typical.get(layer) else float("nan"),
             "mean_vector_norm": vector_norms.get(layer, float("nan"))}
            for layer, value in direction.norms().items()]
    per_layer_rows(rows, ["layer", "norm", "typical_norm", "ratio"], json_)


@app.command("random")
def random_control(
    path: Annotated[str, typer.Argument(help="Direction to match norms with.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Direction file to write.")],
    seed: SeedOpt = 0,
) -> None:
    """A norm-matched Gaussian control direction (per layer, seeded).

    Example: em direction random direction.safetensors --seed 1 -o random1.safetensors
    """
    from em_cli.vectors import SteeringVector

    SteeringVector.load(path, kind="direction").random_like(seed).save(output)
    out.log(f"random control (seed {seed}) → {output}")


@app.command("pca")
def pca(
    files: Annotated[list[str], typer.Argument(help="Direction/vector files (e.g. checkpoints of a vector run).")],
    layer: LayerOpt,
    k: Annotated[int, typer.Option("-k", help="Components to keep.")] = 3,
    output: Annotated[str | None, typer.Option("-o", "--output", help="Write the components as a file.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Principal components of a set of vectors at one layer, with explained variance.

    Example: em direction pca runs/vec/checkpoints/*/vector.safetensors --layer 15
    """
    from em_cli.artifacts.tensors import TensorFile, layer_key
    from em_cli.directions import principal_components
    from em_cli.errors import UsageError
    from em_cli.models.layers import parse_layer

    loaded = [TensorFile.load(f, kind=("direction", "vector")) for f in files]
    if len(loaded) < 2:
        raise UsageError("pca needs at least two vector files")
    # Bounded by the files, not by a model: a layer they lack is named when it is read.
    layer = parse_layer(layer, max(max(f.layers) for f in loaded) + 1)
    components, ratios = principal_components([f.layer(layer) for f in loaded], k)
    rows = [{"component": i + 1, "explained_variance": r} for i, r in enumerate(ratios)]
    if output:
        first = loaded[0]
        TensorFile(kind="components", tensors={layer_key(layer): components}, model_id=first.model_id,
                   model_fingerprint=first.model_fingerprint, hidden_size=first.hidden_size, layers=[layer],
                   extra={"sources": ",".join(files), "explained_variance": ",".join(f"{r:.6f}" for r in ratios)}
                   ).save(output)
    per_layer_rows(rows, ["component", "explained_variance"], json_)


@app.command("project")
@with_options(MODEL)
def project(
    data: Annotated[str, typer.Argument(help="JSONL of responses/conversations; - for stdin.")],
    direction: Annotated[str, typer.Option("--direction", "-d", help="Direction file.")],
    layer: LayerOpt,
    output: Annotated[str, typer.Option("-o", "--output", help="Records with `projection` added; - for stdout.")
                      ] = "-",
    positions: PositionsOpt = "response_mean",
    batch_size: BatchSizeOpt = 8,
    **flags: Any,
) -> None:
    """Score each record by its activation's projection on the unit direction (a monitor).

    Example: em direction project responses.jsonl -d direction.safetensors --layer 15 -o scored.jsonl
    """
    from em_cli.direction_runs import ProjectSettings, run_project
    from em_cli.models.loading import LoadOptions

    settings = ProjectSettings(data=data, direction=direction, layer=layer, output=output, positions=positions,
                               batch_size=batch_size, load=LoadOptions.from_options(flags))
    run_project(settings, log=out.log, warn=out.warn, progress=RowProgress)
