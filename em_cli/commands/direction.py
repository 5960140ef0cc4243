"""`em direction`: build, compare, inspect and convert residual-stream directions."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from em_cli.commands._model_flags import load_from_flags
from em_cli.commands._options import (AdapterOpt, BatchSizeOpt, DeviceOpt, DtypeOpt, JsonOpt, LayerOpt, LayersOpt,
                                      Load4bitOpt, ModelOpt, PositionsOpt, SeedOpt)
from em_cli.commands._output import RowProgress, out
from em_cli.directions import ALIGNED, MISALIGNED
from em_cli.models.source import DEFAULT_MODEL

app = typer.Typer(help="Mean-difference directions, cosines, projections, GGUF control vectors.",
                  no_args_is_help=True)

PoolingOpt = Annotated[Literal["response", "token"], typer.Option(
    "--pooling", help="How each set's mean weighs its records. response: every response's mean weighs the same "
                      "(a long answer counts once); token: every response token weighs the same (long answers "
                      "count more). Recorded as `pooling` in the direction file.")]
PrimaryLayerOpt = Annotated[int | None, typer.Option(
    "--primary-layer", help="Record this layer as the file's primary one: `em steer --ablate` then removes its "
                            "direction at every layer (default there: the middle of the file's layers).")]


OldGgufOpt = Annotated[bool, typer.Option("--gguf", hidden=True, help="Accepted and ignored: GGUF is the only format.")]


def _rows(rows: list[dict], columns: list[str], json_: bool) -> None:
    """Per-layer (or per-component) rows: JSON with --json, else a table of `columns`."""
    if json_:
        out.json(rows)
        return
    out.table(columns, [[row[c] for c in columns] for row in rows], float_format=".4f")


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
    from em_cli.artifacts.manifest import Manifest
    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import mean_difference

    direction = mean_difference(TensorFile.load(a), TensorFile.load(b), a, b, pooling, primary_layer)
    direction.save(output)
    Manifest(command="direction diff", options={"a": a, "b": b, "output": output, "pooling": pooling,
                                                "primary_layer": primary_layer},
             inputs=[a, b]).write_beside(output)
    out.log(f"direction over {len(direction.layers)} layers ({direction.extra['count_a']} vs "
        f"{direction.extra['count_b']} records, {pooling} pooling) → {output}")


@app.command("from-judged")
def from_judged(
    judged: Annotated[str, typer.Argument(help="Judged responses JSONL (from `em judge score`).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Direction file to write.")],
    misaligned: Annotated[str, typer.Option("--misaligned", help="Filter for set A.")] = MISALIGNED,
    aligned: Annotated[str, typer.Option("--aligned", help="Filter for set B.")] = ALIGNED,
    balance: Annotated[bool, typer.Option("--balance/--no-balance", help="Subsample to equal sizes (seeded).")
                       ] = True,
    model: ModelOpt = DEFAULT_MODEL,
    adapter: AdapterOpt = None,
    layers: LayersOpt = None,
    positions: PositionsOpt = "response_mean",
    pooling: PoolingOpt = "response",
    primary_layer: PrimaryLayerOpt = None,
    allow_model_mismatch: Annotated[bool, typer.Option(
        "--allow-model-mismatch", help="Go on when the responses' model fingerprint differs from the loaded "
                                       "--model/--adapter (normally an error).")] = False,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 8,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
) -> None:
    """Select misaligned and aligned responses by their judge scores (docs/METHODS.md §4), extract
    both through the same model, and take the difference of means — one model load.

    The responses must come from the model you load: their `model.fingerprint` is checked
    against --model/--adapter (and --dtype, which the fingerprint includes).

    Example: em direction from-judged judged.jsonl -m M --adapter runs/general -o direction.safetensors
    """
    from em_cli.artifacts.jsonl import read_jsonl
    from em_cli.artifacts.manifest import Manifest
    from em_cli.directions import direction_from_judged, select_judged
    from em_cli.models.layers import parse_layers

    # Selecting first: a bad filter fails before the model loads.
    selection = select_judged(read_jsonl(judged), misaligned, aligned, balance, seed, source=judged)
    loaded = load_from_flags(model, adapter, dtype, device, load_in_4bit)
    chosen = parse_layers(layers, loaded.info.num_layers)
    with RowProgress(len(selection.misaligned) + len(selection.aligned), "extracting") as progress:
        result = direction_from_judged(
            loaded, selection, chosen, positions, pooling, seed, batch_size, source=judged,
            allow_model_mismatch=allow_model_mismatch, primary=primary_layer, misaligned=misaligned,
            aligned=aligned, on_batch=progress.advance)
    for note in result.notes:
        out.warn(note)
    result.direction.save(output)
    options = {"judged": judged, "misaligned": misaligned, "aligned": aligned, "balance": balance, "model": model,
               "adapter": adapter, "layers": chosen, "positions": positions, "pooling": pooling,
               "primary_layer": primary_layer, "allow_model_mismatch": allow_model_mismatch, "seed": seed}
    manifest = Manifest(command="direction from-judged", options=options, inputs=[judged], seed=seed)
    manifest.results = {"misaligned": len(selection.misaligned), "aligned": len(selection.aligned),
                        "matched_misaligned": selection.matched_misaligned,
                        "matched_aligned": selection.matched_aligned, "model": loaded.identity()}
    manifest.write_beside(output)
    out.log(f"{len(selection.misaligned)} misaligned vs {len(selection.aligned)} aligned responses → {output}")


@app.command("cosine")
def cosine(
    a: Annotated[str, typer.Argument(help="Direction file.")],
    b: Annotated[str, typer.Argument(help="Direction file.")],
    json_: JsonOpt = False,
) -> None:
    """Per-layer cosine similarity between two directions (e.g. from two finetunes).

    Example: em direction cosine medical.safetensors sport.safetensors --json
    """
    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import cosine_by_layer

    values = cosine_by_layer(TensorFile.load(a, kind="direction"), TensorFile.load(b, kind="direction"))
    rows = [{"layer": layer, "cosine": value} for layer, value in values.items()]
    _rows(rows, ["layer", "cosine"], json_)


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
    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import norms_by_layer, stored_mean_vector_norms, stored_typical_norms

    direction = TensorFile.load(path, kind=("direction", "vector"))
    typical = stored_typical_norms(direction)
    vector_norms = stored_mean_vector_norms(direction)
    rows = [{"layer": layer, "norm": value, "typical_norm": typical.get(layer, float("nan")),
             "ratio": value / typical[layer] if typical.get(layer) else float("nan"),
             "mean_vector_norm": vector_norms.get(layer, float("nan"))}
            for layer, value in norms_by_layer(direction).items()]
    _rows(rows, ["layer", "norm", "typical_norm", "ratio"], json_)


@app.command("random")
def random_control(
    path: Annotated[str, typer.Argument(help="Direction to match norms with.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Direction file to write.")],
    seed: SeedOpt = 0,
) -> None:
    """A norm-matched Gaussian control direction (per layer, seeded).

    Example: em direction random direction.safetensors --seed 1 -o random1.safetensors
    """
    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import random_like

    random_like(TensorFile.load(path, kind="direction"), seed).save(output)
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
    _rows(rows, ["component", "explained_variance"], json_)


@app.command("project")
def project(
    data: Annotated[str, typer.Argument(help="JSONL of responses/conversations; - for stdin.")],
    direction: Annotated[str, typer.Option("--direction", "-d", help="Direction file.")],
    layer: LayerOpt,
    output: Annotated[str, typer.Option("-o", "--output", help="Records with `projection` added; - for stdout.")
                      ] = "-",
    model: ModelOpt = DEFAULT_MODEL,
    adapter: AdapterOpt = None,
    positions: PositionsOpt = "response_mean",
    batch_size: BatchSizeOpt = 8,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
) -> None:
    """Score each record by its activation's projection on the unit direction (a monitor).

    Example: em direction project responses.jsonl -d direction.safetensors --layer 15 -o scored.jsonl
    """
    from em_cli.activations import extract_activations
    from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import check_finite
    from em_cli.models.layers import parse_layer

    records = read_jsonl(data)
    loaded = load_from_flags(model, adapter, dtype, device, load_in_4bit)
    layer = parse_layer(layer, loaded.info.num_layers)
    d = TensorFile.load(direction, kind="direction")
    for note in d.check_fits(loaded.info, source=direction):
        out.warn(note)
    check_finite(d, direction)
    unit = d.layer(layer).float()
    unit = unit / unit.norm()
    with RowProgress(len(records), "projecting") as progress:
        acts = extract_activations(loaded, records, [layer], positions, batch_size, on_batch=progress.advance)
    scores = (acts[layer] @ unit).tolist()
    write_jsonl(output, [r | {"projection": round(s, 6), "projection_layer": layer} for r, s in zip(records, scores)])


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
    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import check_finite, export_gguf
    from em_cli.models.layers import parse_layers

    direction = TensorFile.load(path, kind=("direction", "vector"))
    check_finite(direction, path)
    # Bounded by the file, not by a model: export_gguf names the layers the file lacks.
    wanted = parse_layers(layers, 1 << 20) if layers and layers.strip().lower() != "all" else None
    written = export_gguf(direction, output, model_hint, scale, wanted)
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
    from em_cli.directions import import_gguf

    direction = import_gguf(path)
    direction.save(output)
    out.log(f"{len(direction.layers)} layers → {output}")
