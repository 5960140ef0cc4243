"""Steering and ablation settings, and sweeps over them (the library behind `em steer`).

A Setting is one combination of interventions (additions of scale · v at layers, and
ablations of directions); a sweep generates the same rows under each setting with the same
per-row seeds, so differences between settings come from the interventions alone.

Ablation follows the paper (docs/METHODS.md §5): ONE layer's direction is removed at every chosen
layer — by default the layer a direction file records as primary, else the middle of its
layers; removing each layer's own direction is an explicit option. Random controls are
norm-matched Gaussian vectors, added or ablated exactly like what they control.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from em_cli.errors import UsageError
from em_cli.interventions import Ablate, AddVector, Intervention, PhaseGate, intervene
from em_cli.responses import GenerateSettings, ResponseRow, generate_responses
from em_cli.generation import GENERATED, PROMPT, SamplingSettings
from em_cli.vectors import SteeringVector

if TYPE_CHECKING:
    import torch

    from em_cli.generation_run import ProgressFactory

    from em_cli.models.loading import LoadedModel

POSITION_PHASES = {"all": (PROMPT, GENERATED), "prompt": (PROMPT,), "generated": (GENERATED,)}


@dataclass
class Source:
    """A steering vector under the name settings are called by: a direction (added at any of
    its layers) or a trained vector (at its own layer, scaled by its alpha). `typical_norms`
    are the yardsticks relative norms are reported against (read once from the file)."""

    name: str
    vector: SteeringVector
    typical_norms: dict[int, float] = field(default_factory=dict)
    control_of: str | None = None


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
    from_layer: int | None = None  # whose direction is removed (None: unknown or this layer's own)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"op": "ablate", "source": self.source, "layer": self.layer}
        if self.from_layer is not None:
            info["direction_of_layer"] = self.from_layer
        return info


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
                   ablations: Sequence[Ablation] = (), positions: str = "all",
                   ablation_controls: Sequence[tuple[str, Sequence[Ablation]]] = ()) -> list[Setting]:
    """The grid: every source × layer × scale (trained vectors at their own layer), each with
    all `ablations` applied; ablations alone when there is nothing to add.
    `ablation_controls` are (label, ablations) alternatives to `ablations` (e.g. a random
    direction ablated the same way): each repeats the grid with its ablations instead."""
    if positions not in POSITION_PHASES:
        raise UsageError(f"unknown positions {positions!r}", hint="all, prompt or generated")
    variants: list[tuple[str, list[Ablation]]] = [("ablate" if ablations else "", list(ablations))]
    variants += [(label, list(controls)) for label, controls in ablation_controls]
    settings = []
    for suffix, ablated in variants:
        for source in sources:
            own = source.vector.own_layer
            source_layers = [own] if own is not None else list(layers or [])
            if not source_layers:
                raise UsageError(f"no layer to steer {source.name} at", hint="pass --layers")
            for layer in source_layers:
                if layer not in source.vector.vectors:
                    have = ", ".join(str(x) for x in sorted(source.vector.vectors))
                    raise UsageError(f"{source.name} has no layer {layer} (it has: {have})")
                for scale in scales:
                    op = source.vector.addition([layer], scale)[layer]
                    addition = Addition(layer, op.vector, op.scale, source.name, source.typical_norms.get(layer))
                    name = f"{source.name}@{layer}x{scale:g}" + (f"+{suffix}" if suffix else "")
                    settings.append(Setting(name, [addition], ablated, positions))
        if not sources:
            settings.append(Setting(suffix or "unsteered", [], ablated, positions))
    names = [s.name for s in settings]
    if len(set(names)) != len(names):
        raise UsageError("two settings got the same name; give the sources distinct names")
    return settings


@dataclass
class AblationChoice:
    """Which direction is removed where, and why (for the log and the manifest)."""

    source: str
    ablations: list[Ablation]
    from_layer: int | None  # None: each layer's own direction
    reason: str

    def describe(self) -> str:
        layers = sorted({a.layer for a in self.ablations})
        where = _span(layers)
        if self.from_layer is None:
            return f"ablating each layer's own direction of {self.source} at layers {where}"
        return f"ablating {self.source}'s layer-{self.from_layer} direction ({self.reason}) at layers {where}"


def ablations_for(source: Source, layers: Sequence[int], from_layer: int | None = None,
                  per_layer: bool = False) -> AblationChoice:
    """Ablate `source` at `layers`. Default (the paper's setting, docs/METHODS.md §5): ONE layer's
    direction at every layer — `from_layer` if given, else the source's primary layer (the
    one its file records, or the middle of its layers). `per_layer=True` removes each
    layer's own direction instead."""
    vectors = source.vector.vectors
    if per_layer:
        if from_layer is not None:
            raise UsageError("--ablate-from and --ablate-per-layer contradict each other",
                             hint="ablate one layer's direction everywhere, or each layer's own, not both")
        missing = [layer for layer in layers if layer not in vectors]
        if missing:
            raise UsageError(f"{source.name} has no direction for layer {missing[0]}",
                             hint="drop --ablate-per-layer to ablate one layer's direction everywhere, or pass "
                                  "--ablate-layers with the file's layers")
        return AblationChoice(source.name, [Ablation(layer, vectors[layer], source.name, layer)
                                            for layer in layers], None, "per layer")
    if from_layer is not None:
        if from_layer not in vectors:
            have = ", ".join(str(x) for x in sorted(vectors))
            raise UsageError(f"{source.name} has no layer {from_layer} to ablate from (it has: {have})")
        chosen, reason = from_layer, "--ablate-from"
    else:
        chosen, reason = source.vector.primary_layer()
    vector = vectors[chosen]
    return AblationChoice(source.name, [Ablation(layer, vector, source.name, chosen) for layer in layers], chosen,
                          reason)


def _span(layers: Sequence[int]) -> str:
    if layers and list(layers) == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(str(x) for x in layers)


def random_control(source: Source, k: int, seed: int) -> Source:
    """Control k of `source`: a Gaussian vector per layer with the same norm (docs/METHODS.md §5),
    seeded by (seed, source name, k), used exactly like the source (same layers, alpha)."""
    from em_cli.generation import row_seed

    control = source.vector.random_like(row_seed(seed, "random-control", source.name, k))
    return Source(name=f"random{k}-{source.name}", vector=control, typical_norms=dict(source.typical_norms),
                  control_of=source.name)


@dataclass
class SteeringPlan:
    """Everything `em steer` will run: the settings, and what it chose on the user's behalf."""

    settings: list[Setting]
    sources: list[Source]
    ablation: list[AblationChoice]
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"settings": [s.describe() for s in self.settings],
                "ablation": [{"source": c.source, "direction_of_layer": c.from_layer, "reason": c.reason,
                              "layers": sorted({a.layer for a in c.ablations})} for c in self.ablation]}


def plan_steering(info: Any, directions: Sequence[str] = (), vectors: Sequence[str] = (),
                  layers: Sequence[int] | None = None, scales: Sequence[float] = (1.0,), positions: str = "all",
                  ablate: Sequence[str] = (), ablate_layers: Sequence[int] = (), ablate_from: int | None = None,
                  per_layer_ablation: bool = False, random_controls: int = 0, seed: int = 0) -> SteeringPlan:
    """Load the direction and vector files (checked against the model `info`) and build the
    grid of settings, with `random_controls` norm-matched random controls for every
    direction, trained vector and ablated direction (seeded by `seed`)."""
    sources: list[Source] = []
    for path in directions:
        source = direction_source(path, info)
        sources += [source, *(random_control(source, k, seed) for k in range(random_controls))]
    for path in vectors:
        source = trained_vector_source(path, info)
        sources += [source, *(random_control(source, k, seed) for k in range(random_controls))]
    choices, controls = [], []
    for path in ablate:
        ablated = direction_source(path, info)
        choice = ablations_for(ablated, ablate_layers, ablate_from, per_layer_ablation)
        choices.append(choice)
        for k in range(random_controls):
            control = ablations_for(random_control(ablated, k, seed), ablate_layers, choice.from_layer,
                                    per_layer_ablation)
            while len(controls) <= k:
                controls.append([])
            controls[k] += control.ablations
    ablations = [a for choice in choices for a in choice.ablations]
    settings = build_settings(sources, layers, scales, ablations, positions,
                              [(f"ablate-random{k}", items) for k, items in enumerate(controls)])
    notes = [choice.describe() for choice in choices]
    if controls:
        notes.append(f"{len(controls)} random control(s) of the ablation: norm-matched Gaussian directions "
                     "ablated the same way")
    return SteeringPlan(settings, sources, choices, notes)


def steered_id(setting: Setting, row: ResponseRow) -> str:
    return f"{setting.name}|{row.id}"


@dataclass(frozen=True, eq=False)
class SteeredRow:
    """One row generated under one setting; its `id` is `setting|row id`."""

    setting: Setting
    row: ResponseRow

    @property
    def id(self) -> str:
        return steered_id(self.setting, self.row)


def run_sweep(loaded: LoadedModel, settings: Sequence[Setting], rows: Sequence[ResponseRow],
              sampling: SamplingSettings, seed: int, batch_size: int, done: set[str] = frozenset(),
              on_batch: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Generate every row under every setting (skipping ids in `done`), one model load."""
    todo = [SteeredRow(setting, row) for setting in settings for row in rows if steered_id(setting, row) not in done]
    return generate_steered(loaded, todo, sampling, seed, batch_size, on_batch)


def generate_steered(loaded: LoadedModel, todo: Sequence[SteeredRow], sampling: SamplingSettings, seed: int,
                     batch_size: int, on_batch: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Yield one record per steered row, in order: each run of rows that share a setting is
    generated inside that setting's interventions, in batches of `batch_size`."""
    from itertools import groupby

    for _, group in groupby(todo, key=lambda steered: steered.setting.name):
        steered_rows = list(group)
        setting = steered_rows[0].setting
        plan, gates = setting.plan()

        def on_phase(phase: str, gates: list[PhaseGate] = gates) -> None:
            for gate in gates:
                gate.set_phase(phase)

        description = setting.describe()
        with intervene(loaded.model, plan):
            records = generate_responses(loaded, [steered.row for steered in steered_rows], sampling, seed,
                                         batch_size, on_batch=on_batch, on_phase=on_phase)
            for steered, record in zip(steered_rows, records, strict=True):
                record["response_id"] = record["id"]
                record["id"] = steered.id
                record["setting"] = setting.name
                record["steering"] = description
                yield record


def parse_scales(text: str) -> list[float]:
    """`0,0.5,1` → [0.0, 0.5, 1.0] (the --scales option)."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"bad --scales {text!r}", hint="comma-separated numbers, e.g. 0,2,4,8") from None


@dataclass(frozen=True)
class SteerSettings:
    """Everything `em steer` is asked to do: the rows, model and output of `generate`
    (generated in-process), and the interventions (field names are `em steer`'s options;
    `layers` and `ablate_layers` are layer specs such as `10-20` or `all`)."""

    generate: GenerateSettings
    direction: list[str] = field(default_factory=list)
    vector: list[str] = field(default_factory=list)
    layers: str | None = None
    scales: list[float] = field(default_factory=lambda: [1.0])
    steer_positions: str = "all"
    ablate: list[str] = field(default_factory=list)
    ablate_layers: str = "all"
    ablate_from: int | None = None
    ablate_per_layer: bool = False
    random_controls: int = 0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SteerSettings:
        """The settings named in `em steer`'s options (`scales` as given on the command line)."""
        scales = options.get("scales", "1")
        return cls(generate=GenerateSettings.from_options(options), direction=list(options.get("direction") or []),
                   vector=list(options.get("vector") or []), layers=options.get("layers"),
                   scales=parse_scales(scales) if isinstance(scales, str) else list(scales),
                   steer_positions=options.get("steer_positions", "all"), ablate=list(options.get("ablate") or []),
                   ablate_layers=options.get("ablate_layers", "all"), ablate_from=options.get("ablate_from"),
                   ablate_per_layer=bool(options.get("ablate_per_layer")),
                   random_controls=int(options.get("random_controls") or 0))

    def manifest_options(self) -> dict[str, Any]:
        if self.generate.options is not None:
            return self.generate.options
        return self.generate.manifest_options() | {f.name: getattr(self, f.name) for f in fields(self)
                                                    if f.name != "generate"}

    def plan(self, info: Any) -> SteeringPlan:
        from em_cli.models.layers import parse_layers

        return plan_steering(
            info, directions=self.direction, vectors=self.vector,
            layers=parse_layers(self.layers, info.num_layers) if self.layers else None, scales=self.scales,
            positions=self.steer_positions, ablate=self.ablate,
            ablate_layers=parse_layers(self.ablate_layers, info.num_layers), ablate_from=self.ablate_from,
            per_layer_ablation=self.ablate_per_layer, random_controls=self.random_controls, seed=self.generate.seed)


@dataclass
class SteerResult:
    """What `run_steer` ran; `to_dict()` is the manifest's results."""

    output: str
    plan: SteeringPlan
    rows: int  # per setting
    model: dict[str, Any]
    new_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.plan.describe() | {"rows": self.rows * len(self.plan.settings), "model": self.model}

    def summary(self) -> str:
        return (f"{len(self.plan.settings)} settings × {self.rows} rows"
                + (f" → {self.output}" if self.output != "-" else ""))


def run_steer(settings: SteerSettings, log: Callable[[str], None] | None = None,
              progress: ProgressFactory | None = None) -> SteerResult:
    """Load the model once, plan the settings and generate (or continue) every row under each
    into `settings.generate.output`, with the manifest beside it. `log` hears the plan (what is
    ablated, ‖scale·v‖ against typical norms); `progress` shows rows as they are written."""
    from em_cli.artifacts.manifest import Manifest
    from em_cli.generation_run import run_rows
    from em_cli.responses import identity_of, run_identity

    run = settings.generate
    rows = run.rows()
    sampling = run.sampling()
    loaded = run.load(log)
    plan = settings.plan(loaded.info)
    for note in [*plan.notes, *_norm_notes(plan.settings)]:
        if log is not None:
            log(note)
    manifest = Manifest(command="steer", options=settings.manifest_options(),
                        inputs=[run.questions, *settings.direction, *settings.ablate], seed=run.seed)
    result = SteerResult(output=run.output, plan=plan, rows=len(rows), model=loaded.identity())
    planned = [SteeredRow(setting, row) for setting in plan.settings for row in rows]
    done = run_rows(planned, lambda todo: generate_steered(loaded, todo, sampling, run.seed, run.batch_size),
                    run.output, run_identity(run.model, run.adapter, sampling, run.seed), identity_of, manifest,
                    results=lambda _: result.to_dict(), log=log, progress=progress, description="steering")
    result.new_rows = done.new_rows
    return result


def _norm_notes(settings: Sequence[Setting]) -> list[str]:
    """‖scale·v‖ of each addition, beside the typical activation norm at its layer when known."""
    notes = []
    for setting in settings:
        for item in setting.describe()["interventions"]:
            if item["op"] == "add":
                relative = f" = {item['relative_norm']:.2f}× typical {item['typical_norm']:.1f}" \
                    if "relative_norm" in item else ""
                notes.append(f"{setting.name}: ‖scale·v‖ = {item['norm']:.2f}{relative}")
    return notes


def direction_source(path: str, info: Any, name: str | None = None) -> Source:
    """A direction file as something to add (checked against the model in use)."""
    import logging
    from pathlib import Path

    direction = SteeringVector.load(path, kind="direction")
    for warning in direction.check_fits(info, source=str(path)):
        logging.getLogger(__name__).info("Note: %s", warning)
    direction.check_finite(str(path))
    return Source(name=name or Path(path).stem, vector=direction, typical_norms=direction.typical_norms())


def trained_vector_source(path: str, info: Any, name: str | None = None) -> Source:
    """A vector from `em finetune --method vector`, at its own layer and alpha."""
    from pathlib import Path

    from em_cli.training.solutions import vector_file

    file = vector_file(path)
    vector = SteeringVector.load(file, kind="vector")
    vector.check_fits(info, source=str(file))
    vector.check_finite(str(file))
    label = name or (Path(path).name if Path(path).is_dir() else Path(path).stem)
    return Source(name=label, vector=vector)
