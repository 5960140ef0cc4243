"""`em extract`: residual-stream activations of conversations → activations safetensors."""

from __future__ import annotations

from typing import Annotated

import typer

from em_cli.commands._model_flags import load_from_flags
from em_cli.commands._options import (AdapterOpt, BatchSizeOpt, DeviceOpt, DtypeOpt, LayersOpt, LimitOpt,
                                      Load4bitOpt, ModelOpt, PositionsOpt)
from em_cli.commands._output import out
from em_cli.commands._progress import RowProgress
from em_cli.models.source import DEFAULT_MODEL


def extract(
    data: Annotated[str, typer.Argument(help="JSONL of conversations (`messages`) or responses; - for stdin.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Activations file (.safetensors).")],
    model: ModelOpt = DEFAULT_MODEL,
    adapter: AdapterOpt = None,
    vector: Annotated[str | None, typer.Option("--vector", help="Apply a trained steering vector (run dir or file).")
                      ] = None,
    layers: LayersOpt = None,
    positions: PositionsOpt = "response_mean",
    where: Annotated[str | None, typer.Option("--where", help='Only records matching, e.g. "aligned < 30".')] = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = 8,
    dtype: DtypeOpt = "auto",
    device: DeviceOpt = "auto",
    load_in_4bit: Load4bitOpt = False,
) -> None:
    """Take one activation vector per record at the block output of each chosen layer.

    Per record and layer the file holds the mean over the chosen positions, the mean
    per-token norm over them (the typical activation norm of docs/METHODS.md §5) and their count
    (for `em direction diff --pooling token`).

    Examples:

      em extract judged.jsonl --where "aligned < 30 and coherent > 50" -m M --adapter runs/g -o mis.safetensors

      em extract data.jsonl --layers 10-20 --positions last_prompt -o acts.safetensors
    """
    import contextlib

    from em_cli.activations import collect_activations
    from em_cli.artifacts.jsonl import read_jsonl
    from em_cli.artifacts.manifest import Manifest
    from em_cli.models.layers import parse_layers
    from em_cli.expressions import compile_expression
    from em_cli.directions import activation_file
    from em_cli.errors import DataError

    records = read_jsonl(data)
    selection = ""
    if where:
        keep = compile_expression(where)
        records = [r for r in records if keep(r)]
        selection = where
    if limit:
        records = records[:limit]
    if not records:
        raise DataError(f"no records to extract from in {data}" + (f" matching {where!r}" if where else ""))
    options = {"data": data, "output": output, "model": model, "adapter": adapter, "vector": vector,
               "layers": layers, "positions": positions, "where": where, "limit": limit, "batch_size": batch_size,
               "dtype": dtype, "device": device, "load_in_4bit": load_in_4bit}
    manifest = Manifest(command="extract", options=options, inputs=[data])
    loaded = load_from_flags(model, adapter, dtype, device, load_in_4bit)
    chosen = parse_layers(layers, loaded.info.num_layers)
    scope = contextlib.nullcontext()
    vector_note = ""
    if vector:
        from em_cli.interventions import intervene
        from em_cli.steering import trained_vector_source

        source = trained_vector_source(vector, loaded.info)
        scope = intervene(loaded.model, {layer: [op] for layer, op in source.vector.addition().items()})
        vector_note = str(vector)
    with scope, RowProgress(len(records), "extracting") as progress:
        acts = collect_activations(loaded, records, chosen, positions, batch_size, on_batch=progress.advance)
    info = loaded.info
    extra = {"positions": positions, "count": str(len(records)), "source": str(data), "selection": selection,
             "adapter": adapter or "", "vector": vector_note}
    activation_file(acts, info.model_id, info.fingerprint, info.hidden_size, extra).save(output)
    manifest.results = {"records": len(records), "layers": chosen, "model": loaded.identity()}
    manifest.write_beside(output)
    if len(records) < 10:
        out.warn(f"only {len(records)} records: means over so few are noisy")
    out.log(f"{len(records)} records × {len(chosen)} layers → {output}")

