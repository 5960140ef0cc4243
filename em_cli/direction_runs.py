"""The runs of `em direction diff`, `from-judged` and `project`, callable from Python.

The maths (selection, extraction, difference of means) is in `directions` and `activations`;
these functions are the workflow around it: read the file, load the model once, write the
output and its manifest.

    result = run_from_judged(FromJudgedSettings(judged="judged.jsonl", output="direction.safetensors",
                                                load=LoadOptions("M", adapter="runs/general/adapter")))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from em_cli.directions import ALIGNED, MISALIGNED
from em_cli.generation_run import NoProgress
from em_cli.models.loading import LoadOptions
from em_cli.models.source import DEFAULT_MODEL

if TYPE_CHECKING:
    from em_cli.generation_run import ProgressFactory
    from em_cli.vectors import SteeringVector


def run_diff(a: str, b: str, output: str, pooling: str = "response", primary_layer: int | None = None
             ) -> SteeringVector:
    """mean(A) − mean(B) per layer from two activation files, written to `output` with its
    manifest (both inputs' provenance are in the file)."""
    from em_cli.artifacts.manifest import Manifest
    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import mean_difference

    direction = mean_difference(TensorFile.load(a), TensorFile.load(b), a, b, pooling, primary_layer)
    direction.save(output)
    Manifest(command="direction diff", options={"a": a, "b": b, "output": output, "pooling": pooling,
                                                "primary_layer": primary_layer},
             inputs=[a, b]).write_beside(output)
    return direction


@dataclass
class FromJudgedSettings:
    judged: str
    output: str
    misaligned: str = MISALIGNED
    aligned: str = ALIGNED
    balance: bool = True
    layers: str | None = None
    positions: str = "response_mean"
    pooling: str = "response"
    primary_layer: int | None = None
    allow_model_mismatch: bool = False
    seed: int = 0
    batch_size: int = 8
    load: LoadOptions = field(default_factory=lambda: LoadOptions(DEFAULT_MODEL))


@dataclass
class FromJudgedResult:
    output: str
    misaligned: int
    aligned: int
    layers: list[int]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return f"{self.misaligned} misaligned vs {self.aligned} aligned responses → {self.output}"


def run_from_judged(settings: FromJudgedSettings, log: Callable[[str], None] | None = None,
                    warn: Callable[[str], None] | None = None,
                    progress: ProgressFactory | None = None) -> FromJudgedResult:
    """Select the two sets of `settings.judged` (a bad filter fails before the model loads),
    extract both through the model, and write the difference of means with its manifest."""
    from em_cli.artifacts.jsonl import read_jsonl
    from em_cli.artifacts.manifest import Manifest
    from em_cli.directions import direction_from_judged, select_judged
    from em_cli.models.layers import parse_layers
    from em_cli.models.loading import load_model

    s = settings
    selection = select_judged(read_jsonl(s.judged), s.misaligned, s.aligned, s.balance, s.seed, source=s.judged)
    loaded = load_model(s.load, log=log)
    chosen = parse_layers(s.layers, loaded.info.num_layers)
    total = len(selection.misaligned) + len(selection.aligned)
    with (progress or NoProgress)(total, "extracting", 0) as shown:
        made = direction_from_judged(
            loaded, selection, chosen, s.positions, s.pooling, s.seed, s.batch_size, source=s.judged,
            allow_model_mismatch=s.allow_model_mismatch, primary=s.primary_layer, misaligned=s.misaligned,
            aligned=s.aligned, on_batch=shown.advance)
    for note in made.notes:
        if warn is not None:
            warn(note)
    made.direction.save(s.output)
    options = {"judged": s.judged, "misaligned": s.misaligned, "aligned": s.aligned, "balance": s.balance,
               "model": s.load.model, "adapter": s.load.adapter, "layers": chosen, "positions": s.positions,
               "pooling": s.pooling, "primary_layer": s.primary_layer,
               "allow_model_mismatch": s.allow_model_mismatch, "seed": s.seed}
    manifest = Manifest(command="direction from-judged", options=options, inputs=[s.judged], seed=s.seed)
    manifest.results = {"misaligned": len(selection.misaligned), "aligned": len(selection.aligned),
                        "matched_misaligned": selection.matched_misaligned,
                        "matched_aligned": selection.matched_aligned, "model": loaded.identity()}
    manifest.write_beside(s.output)
    return FromJudgedResult(s.output, len(selection.misaligned), len(selection.aligned), chosen, made.notes)


@dataclass
class ProjectSettings:
    data: str
    direction: str
    layer: str
    output: str = "-"
    positions: str = "response_mean"
    batch_size: int = 8
    load: LoadOptions = field(default_factory=lambda: LoadOptions(DEFAULT_MODEL))


def run_project(settings: ProjectSettings, log: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None, progress: ProgressFactory | None = None) -> int:
    """Write each record of `settings.data` with `projection` (its activation's projection on
    the unit direction at the layer) and `projection_layer` added; returns the layer used."""
    from em_cli.activations import extract_activations
    from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
    from em_cli.models.layers import parse_layer
    from em_cli.models.loading import load_model
    from em_cli.vectors import SteeringVector

    records = read_jsonl(settings.data)
    loaded = load_model(settings.load, log=log)
    layer = parse_layer(settings.layer, loaded.info.num_layers)
    direction = SteeringVector.load(settings.direction, kind="direction")
    for note in direction.check_fits(loaded.info, source=settings.direction):
        if warn is not None:
            warn(note)
    direction.check_finite(settings.direction)
    unit = direction.layer(layer).float()
    unit = unit / unit.norm()
    with (progress or NoProgress)(len(records), "projecting", 0) as shown:
        acts = extract_activations(loaded, records, [layer], settings.positions, settings.batch_size,
                                   on_batch=shown.advance)
    scores = (acts[layer] @ unit).tolist()
    write_jsonl(settings.output, [record | {"projection": round(score, 6), "projection_layer": layer}
                                  for record, score in zip(records, scores, strict=True)])
    return layer

