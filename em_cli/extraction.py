"""The `em extract` run: select records, load the model once, collect one activation vector
per record and layer, and save them as an activations file with its manifest.

What a record's activation is (positions, pooling, per-token norms) is `activations`'s
business; this module is the workflow around it, callable from Python:

    result = run_extract(ExtractSettings(data="judged.jsonl", output="mis.safetensors",
                                         where="aligned < 30", layers="15", load=LoadOptions("M")))
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from em_cli.models.loading import LoadOptions
from em_cli.models.source import DEFAULT_MODEL

if TYPE_CHECKING:
    from em_cli.generation_run import ProgressFactory

# Means over fewer records than this are noisy enough to say so.
FEW_RECORDS = 10


@dataclass
class ExtractSettings:
    data: str
    output: str
    vector: str | None = None  # a trained steering vector applied while extracting (run dir or file)
    layers: str | None = None  # a layer spec; None = the model's default layers
    positions: str = "response_mean"
    where: str | None = None  # a filter expression on the records
    limit: int | None = None
    batch_size: int = 8
    load: LoadOptions = field(default_factory=lambda: LoadOptions(DEFAULT_MODEL))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ExtractSettings:
        known = set(cls.__dataclass_fields__) - {"load"}
        return cls(**{key: value for key, value in options.items() if key in known},
                   load=LoadOptions.from_options(options))

    def manifest_options(self) -> dict[str, Any]:
        """Flat, as the command's options are (the keys earlier manifests have)."""
        flat = {key: value for key, value in asdict(self).items() if key != "load"}
        load = asdict(self.load)
        return flat | {key: load[key] for key in ("model", "adapter", "dtype", "device", "load_in_4bit")}


@dataclass
class ExtractResult:
    output: str
    records: int
    layers: list[int]
    model: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return f"{self.records} records × {len(self.layers)} layers → {self.output}"


def select_records(data: str, where: str | None, limit: int | None) -> list[dict[str, Any]]:
    """The records of `data` matching `where`, the first `limit` of them; refuses none."""
    from em_cli.artifacts.jsonl import read_jsonl
    from em_cli.errors import DataError
    from em_cli.expressions import compile_expression

    records = read_jsonl(data)
    if where:
        keep = compile_expression(where)
        records = [record for record in records if keep(record)]
    if limit:
        records = records[:limit]
    if not records:
        raise DataError(f"no records to extract from in {data}" + (f" matching {where!r}" if where else ""))
    return records


def run_extract(settings: ExtractSettings, log: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None, progress: ProgressFactory | None = None) -> ExtractResult:
    """Extract `settings.data`'s activations into `settings.output` (and its manifest). `log`
    hears where the model came from, `warn` about too few records, `progress` counts records."""
    from em_cli.activations import collect_activations
    from em_cli.artifacts.manifest import Manifest
    from em_cli.directions import activation_file
    from em_cli.generation_run import NoProgress
    from em_cli.models.layers import parse_layers
    from em_cli.models.loading import load_model

    records = select_records(settings.data, settings.where, settings.limit)
    manifest = Manifest(command="extract", options=settings.manifest_options(), inputs=[settings.data])
    loaded = load_model(settings.load, log=log)
    chosen = parse_layers(settings.layers, loaded.info.num_layers)
    scope: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if settings.vector:
        from em_cli.interventions import intervene
        from em_cli.steering import trained_vector_source

        source = trained_vector_source(settings.vector, loaded.info)
        scope = intervene(loaded.model, {layer: [op] for layer, op in source.vector.addition().items()})
    with scope, (progress or NoProgress)(len(records), "extracting", 0) as shown:
        acts = collect_activations(loaded, records, chosen, settings.positions, settings.batch_size,
                                   on_batch=shown.advance)
    info = loaded.info
    extra = {"positions": settings.positions, "count": str(len(records)), "source": str(settings.data),
             "selection": settings.where or "", "adapter": settings.load.adapter or "",
             "vector": settings.vector or ""}
    activation_file(acts, info.model_id, info.fingerprint, info.hidden_size, extra).save(settings.output)
    result = ExtractResult(output=settings.output, records=len(records), layers=chosen, model=loaded.identity())
    manifest.results = {"records": result.records, "layers": chosen, "model": result.model}
    manifest.write_beside(settings.output)
    if len(records) < FEW_RECORDS and warn is not None:
        warn(f"only {len(records)} records: means over so few are noisy")
    return result
