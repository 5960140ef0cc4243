"""Steering and ablation settings, and sweeps over them (the library behind `em steer`).

A Setting is one combination of interventions (additions of scale · v at layers, and
ablations of directions); a sweep generates the same rows under each setting with the same
per-row seeds, so differences between settings come from the interventions alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from em_cli.errors import UsageError
from em_cli.interventions import Ablate, AddVector, Intervention, PhaseGate, intervene
from em_cli.responses import ResponseRow, generate_responses
from em_cli.sampling import GENERATED, PROMPT, SamplingSettings

if TYPE_CHECKING:
    import torch

    from em_cli.models.loading import LoadedModel

POSITION_PHASES = {"all": (PROMPT, GENERATED), "prompt": (PROMPT,), "generated": (GENERATED,)}


@dataclass
class Source:
    """Vectors that can be added: a direction file (any of its layers) or a trained vector
    (its own layer, scaled by its alpha)."""

    name: str
    vectors: dict[int, torch.Tensor]
    base_scale: float = 1.0
    own_layer: int | None = None
    typical_norms: dict[int, float] = field(default_factory=dict)


@dataclass
class Addition:
    layer: int
    vector: torch.Tensor
    scale: float
    source: str
    typical_norm: float | None = None

    def describe(self) -> dict[str, Any]:
        norm = float(self.vector.float().norm()) * abs(self.scale)
        info = {"op": "add", "source": self.source, "layer": self.layer, "scale": self.scale,
                "norm": round(norm, 4)}
        if self.typical_norm:
            info["typical_norm"] = round(self.typical_norm, 4)
            info["relative_norm"] = round(norm / self.typical_norm, 4)
        return info


@dataclass
class Ablation:
    layer: int
    direction: torch.Tensor
    source: str

    def describe(self) -> dict[str, Any]:
        return {"op": "ablate", "source": self.source, "layer": self.layer}


@dataclass
class Setting:
    name: str
    additions: list[Addition] = field(default_factory=list)
    ablations: list[Ablation] = field(default_factory=list)
    positions: str = "all"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "positions": self.positions,
                "interventions": [a.describe() for a in self.ablations] + [a.describe() for a in self.additions]}

    def plan(self) -> tuple[dict[int, list[Intervention]], list[PhaseGate]]:
        """Interventions per layer (ablations first, then additions) and the phase gates
        that the generation engine must keep informed."""
        plan: dict[int, list[Intervention]] = {}
        gates: list[PhaseGate] = []
        for ablation in self.ablations:
            plan.setdefault(ablation.layer, []).append(Ablate(ablation.direction))
        for addition in self.additions:
            op: Intervention = AddVector(addition.vector, scale=addition.scale)
            if self.positions != "all":
                gate = PhaseGate(op, POSITION_PHASES[self.positions])
                gates.append(gate)
                op = gate
            plan.setdefault(addition.layer, []).append(op)
        return plan, gates


def build_settings(sources: Sequence[Source], layers: Sequence[int] | None, scales: Sequence[float],
                   ablations: Sequence[Ablation] = (), positions: str = "all") -> list[Setting]:
    """The grid: every source × layer × scale (trained vectors at their own layer), each with
    all `ablations` applied; ablations alone when there is nothing to add."""
    if positions not in POSITION_PHASES:
        raise UsageError(f"unknown positions {positions!r}", hint="all, prompt or generated")
    settings = []
    for source in sources:
        source_layers = [source.own_layer] if source.own_layer is not None else list(layers or [])
        if not source_layers:
            raise UsageError(f"no layer to steer {source.name} at", hint="pass --layers")
        for layer in source_layers:
            if layer not in source.vectors:
                have = ", ".join(str(x) for x in sorted(source.vectors))
                raise UsageError(f"{source.name} has no layer {layer} (it has: {have})")
            for scale in scales:
                addition = Addition(layer, source.vectors[layer], scale * source.base_scale, source.name,
                                    source.typical_norms.get(layer))
                name = f"{source.name}@{layer}x{scale:g}" + ("+ablate" if ablations else "")
                settings.append(Setting(name, [addition], list(ablations), positions))
    if not sources:
        name = "ablate" if ablations else "unsteered"
        settings.append(Setting(name, [], list(ablations), positions))
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise UsageError("two settings got the same name; give the sources distinct names")
    return settings


def ablations_for(source: Source, layers: Sequence[int], from_layer: int | None = None) -> list[Ablation]:
    """Ablate `source` at `layers`: with `from_layer`, that layer's direction everywhere;
    a single-layer file, its one direction everywhere; otherwise each layer's own."""
    if from_layer is not None:
        if from_layer not in source.vectors:
            raise UsageError(f"{source.name} has no layer {from_layer} to ablate from")
        return [Ablation(layer, source.vectors[from_layer], source.name) for layer in layers]
    if len(source.vectors) == 1:
        (vector,) = source.vectors.values()
        return [Ablation(layer, vector, source.name) for layer in layers]
    missing = [layer for layer in layers if layer not in source.vectors]
    if missing:
        raise UsageError(f"{source.name} has no direction for layer {missing[0]}",
                         hint="pass --ablate-from L to ablate one layer's direction everywhere")
    return [Ablation(layer, source.vectors[layer], source.name) for layer in layers]


def steered_id(setting: Setting, row: ResponseRow) -> str:
    return f"{setting.name}|{row.id}"


def run_sweep(loaded: LoadedModel, settings: Sequence[Setting], rows: Sequence[ResponseRow],
              sampling: SamplingSettings, seed: int, batch_size: int, done: set[str] = frozenset(),
              on_batch: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Generate every row under every setting (skipping ids in `done`), one model load."""
    for setting in settings:
        todo = [row for row in rows if steered_id(setting, row) not in done]
        if not todo:
            continue
        plan, gates = setting.plan()

        def on_phase(phase: str, gates: list[PhaseGate] = gates) -> None:
            for gate in gates:
                gate.set_phase(phase)

        description = setting.describe()
        with intervene(loaded.model, plan):
            records = generate_responses(loaded, todo, sampling, seed, batch_size, on_batch=on_batch,
                                         on_phase=on_phase)
            for row, record in zip(todo, records, strict=True):
                record["response_id"] = record["id"]
                record["id"] = steered_id(setting, row)
                record["setting"] = setting.name
                record["steering"] = description
                yield record


def direction_source(path: str, info: Any, name: str | None = None) -> Source:
    """A direction file as something to add (checked against the model in use)."""
    import logging
    from pathlib import Path

    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import check_finite, stored_typical_norms

    direction = TensorFile.load(path, kind="direction")
    for warning in direction.check_fits(info, source=str(path)):
        logging.getLogger(__name__).info("Note: %s", warning)
    check_finite(direction, str(path))
    return Source(name=name or Path(path).stem, vectors={layer: direction.layer(layer) for layer in direction.layers},
                  typical_norms=stored_typical_norms(direction))


def trained_vector_source(path: str, info: Any, name: str | None = None) -> Source:
    """A vector from `em finetune --method vector`, at its own layer and alpha."""
    from pathlib import Path

    from em_cli.artifacts.tensors import TensorFile
    from em_cli.directions import check_finite
    from em_cli.training.solutions import vector_file

    file = vector_file(path)
    vector = TensorFile.load(file, kind="vector")
    vector.check_fits(info, source=str(file))
    check_finite(vector, str(file))
    layer = vector.layers[0]
    label = name or (Path(path).name if Path(path).is_dir() else Path(path).stem)
    return Source(name=label, vectors={layer: vector.layer(layer)}, base_scale=float(vector.extra.get("alpha", 1.0)),
                  own_layer=layer)
