"""Named solutions on one loaded base model: steering vectors and LoRA adapters.

Every metric of docs/METHODS.md §6 evaluates many variants of a few solutions (rescaled, perturbed,
switched off). A `SolutionBench` holds the base model once and applies one solution at a
time, changing weights *in place* and restoring them — it never reloads anything.

- A vector (`em finetune --method vector`) is an `AddVector` op at its layer; its norm is
  ‖alpha·v‖, and rescaling changes the op's scale.
- Adapters are loaded with PEFT as named adapters of one `PeftModel` (switched with
  `set_adapter`). Their norm is the one of docs/METHODS.md §6: the mean over adapted modules of ‖B·A‖_F,
  *without* the LoRA scaling factor (alpha/r or alpha/√r). The effective weight change
  ‖scaling·B·A‖_F is recorded beside it as `effective_norm`; for adapters trained with the
  same rank and alpha (the usual general-vs-narrow pair) the two differ by one constant
  factor, so comparisons at "equal norm" agree. Rescaling multiplies every lora_B by s
  (ΔW = scaling·(s·B)·A = s·ΔW), so s = 0 adds exact zeros: the base model, bit for bit.

Mixing vectors and adapters in one bench works: a vector is evaluated with the adapters
switched off, an adapter with no vector hook registered. Absolute norms of the two kinds
are in different units, so equal-norm comparisons group solutions by kind.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.artifacts.hashing import sha256_file
from em_cli.errors import ModelError, UsageError
from em_cli.interventions import AddVector, intervene
from em_cli.training.solutions import ADAPTER_DIR, VECTOR_FILE, adapter_dir, vector_file
from em_cli.vectors import SteeringVector

if TYPE_CHECKING:
    import torch

    from em_cli.models.loading import LoadedModel

log = logging.getLogger(__name__)
VECTOR, ADAPTER = "vector", "adapter"
NORM_DEFINITION = {VECTOR: "‖alpha·v‖",
                   ADAPTER: "mean over adapted modules of ‖B·A‖_F, LoRA scaling not included (see effective_norm)"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class SolutionSpec:
    """A solution named on the command line: NAME=PATH, resolved to its kind and file."""

    name: str
    path: str
    kind: str  # "vector" | "adapter"
    location: Path  # the vector file, or the adapter directory


def parse_solution_args(items: Sequence[str]) -> list[SolutionSpec]:
    """Turn `NAME=PATH` items into specs; PATH is a run directory (with adapter/ or
    vector.safetensors), a vector file, or an adapter directory.

    Example: parse_solution_args(["general=runs/g", "narrow=runs/n"])
    """
    specs: list[SolutionSpec] = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"bad solution {item!r}: expected NAME=PATH",
                             hint="e.g. --solutions general=runs/general narrow=runs/narrow")
        if not _NAME.match(name):
            raise UsageError(f"bad solution name {name!r}: use letters, digits and _ . + -")
        specs.append(resolve_solution(name, path))
    names = [s.name for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UsageError(f"solution name used twice: {', '.join(duplicated)}", hint="give each solution its own name")
    if not specs:
        raise UsageError("no solutions given", hint="pass --solutions NAME=PATH [NAME=PATH ...]")
    return specs


def resolve_solution(name: str, path: str) -> SolutionSpec:
    """Find what `path` holds: a PEFT adapter or an `em` vector file."""
    where = Path(path)
    if not where.exists():
        raise UsageError(f"solution {name}: {path} does not exist")
    if where.is_dir() and ((where / "adapter_config.json").exists()
                           or (where / ADAPTER_DIR / "adapter_config.json").exists()):
        return SolutionSpec(name, path, ADAPTER, adapter_dir(where))
    if where.is_file() or (where / VECTOR_FILE).exists():
        return SolutionSpec(name, path, VECTOR, vector_file(where))
    raise ModelError(f"solution {name}: {path} holds neither a PEFT adapter nor {VECTOR_FILE}",
                     hint="pass a run directory of `em finetune` (lora, rank1 or vector), a vector file or "
                          "an adapter directory")


@dataclass
class VectorHandle:
    """A trained steering vector applied as h + scale·v at the block output of its layer;
    `op` is the one intervention the bench rescales and perturbs in place."""

    name: str
    path: str
    vector: SteeringVector  # as trained (float32, on the model's device)
    fingerprint: str
    control_of: str | None = None
    seed: int | None = None
    kind: str = VECTOR
    op: AddVector = field(init=False, repr=False)

    def __post_init__(self) -> None:
        (self.op,) = self.vector.addition().values()

    @property
    def layer(self) -> int:
        return self.vector.own_layer

    @property
    def alpha(self) -> float:
        return self.vector.alpha

    @property
    def original(self) -> torch.Tensor:
        """v as trained (without alpha)."""
        return self.vector.layer(self.layer)

    @property
    def base_fingerprint(self) -> str:
        """The fingerprint of the model the vector was trained on."""
        return self.vector.model_fingerprint

    @property
    def norm(self) -> float:
        """‖alpha·v‖ of the solution as trained."""
        return self.vector.norms()[self.layer]

    def set_scale(self, s: float) -> None:
        """Apply s × the solution (s = 1: as trained, 0: nothing added)."""
        self.op.vector = self.original
        self.op.scale = self.alpha * s

    def set_norm(self, target: float) -> None:
        """Rescale so that ‖scale·v‖ = target, keeping the direction."""
        self.set_scale(target / _nonzero(self.norm, self.name))

    def perturb(self, epsilon: float, generator: torch.Generator) -> float | None:
        """Replace v by its norm-preserving perturbation (alpha unchanged); return the
        measured cosine between the perturbed and the original vector (√(1−ε²))."""
        from em_cli.comparison.perturbation import cosine, perturb

        self.op.vector = perturb(self.original, epsilon, generator)
        self.op.scale = self.alpha
        return cosine(self.op.vector, self.original)

    def restore(self) -> None:
        self.set_scale(1.0)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "path": self.path, "norm": self.norm, "layer": self.layer,
                "alpha": self.alpha, "vector_norm": float(self.original.norm()), "fingerprint": self.fingerprint,
                "base_fingerprint": self.base_fingerprint, "control_of": self.control_of, "seed": self.seed}


@dataclass
class LoraModule:
    """One adapted module of one adapter: its A and B weights and their originals."""

    name: str
    a: torch.nn.Parameter  # [r, in]
    b: torch.nn.Parameter  # [out, r]
    a0: torch.Tensor
    b0: torch.Tensor
    scaling: float

    @property
    def product_norm(self) -> float:
        """‖B·A‖_F of the original weights."""
        return float((self.b0.double() @ self.a0.double()).norm())


@dataclass
class AdapterHandle:
    """A LoRA adapter, one of several named adapters of the bench's PeftModel."""

    name: str
    path: str
    adapter_name: str  # the name inside the PeftModel
    modules: list[LoraModule]
    fingerprint: str
    rank: int
    control_of: str | None = None
    seed: int | None = None
    kind: str = ADAPTER
    _norms: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._norms = [m.product_norm for m in self.modules]

    @property
    def norm(self) -> float:
        """Mean over adapted modules of ‖B·A‖_F (docs/METHODS.md §6; LoRA scaling not included)."""
        return sum(self._norms) / len(self._norms)

    @property
    def effective_norm(self) -> float:
        """Mean over adapted modules of ‖scaling·B·A‖_F: the actual weight change."""
        return sum(n * abs(m.scaling) for n, m in zip(self._norms, self.modules, strict=True)) / len(self._norms)

    def module_norms(self) -> list[float]:
        return list(self._norms)

    def set_scale(self, s: float) -> None:
        """ΔW → s·ΔW for every module, by writing s·B into lora_B (A kept)."""
        import torch

        with torch.no_grad():
            for module in self.modules:
                module.a.copy_(module.a0)
                module.b.copy_(module.b0 * s)

    def set_norm(self, target: float) -> None:
        self.set_scale(target / _nonzero(self.norm, self.name))

    def perturb(self, epsilon: float, generator: torch.Generator) -> float | None:
        """Perturb every A and every B matrix on its own (flattened), norm-preserving; return
        the measured cos(B′A′, BA) of the weight change, flattened and averaged over modules
        (≈ 1−ε², not √(1−ε²): both factors move). None if every B·A is zero."""
        import torch

        from em_cli.comparison.perturbation import perturb, product_cosine

        cosines = []
        with torch.no_grad():
            for module in self.modules:
                module.a.copy_(perturb(module.a0, epsilon, generator))
                module.b.copy_(perturb(module.b0, epsilon, generator))
                value = product_cosine(module.b, module.a, module.b0, module.a0)
                if value is not None:
                    cosines.append(value)
        return sum(cosines) / len(cosines) if cosines else None

    def restore(self) -> None:
        self.set_scale(1.0)

    def describe(self) -> dict[str, Any]:
        scalings = sorted({round(m.scaling, 8) for m in self.modules})
        return {"name": self.name, "kind": self.kind, "path": self.path, "norm": self.norm,
                "effective_norm": self.effective_norm, "modules": len(self.modules), "rank": self.rank,
                "scaling": scalings[0] if len(scalings) == 1 else scalings, "fingerprint": self.fingerprint,
                "control_of": self.control_of, "seed": self.seed}


Handle = VectorHandle | AdapterHandle


class SolutionBench:
    """One base model and the named solutions that can be applied to it, one at a time.

        bench = SolutionBench(loaded)
        bench.add(spec)                       # for each SolutionSpec
        with bench.applied("general") as h:   # only `general` is active in here
            h.set_scale(0.5); loss = evaluate(bench.model)
            h.restore()
        with bench.base():                    # nothing applied
            ...
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.info = loaded.info  # fingerprint of the bare base model, before any adapter is injected
        self.model: Any = loaded.model
        self.handles: dict[str, Handle] = {}
        self._adapter_count = 0

    @property
    def names(self) -> list[str]:
        return list(self.handles)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def add(self, spec: SolutionSpec) -> Handle:
        if spec.name in self.handles:
            raise UsageError(f"solution name used twice: {spec.name}")
        handle = self._add_vector(spec) if spec.kind == VECTOR else self._add_adapter(spec)
        self.handles[spec.name] = handle
        return handle

    def _add_vector(self, spec: SolutionSpec) -> VectorHandle:
        import torch

        trained = SteeringVector.load(spec.location, kind="vector")
        trained.check_fits(self.info, source=str(spec.location))  # raises on a different hidden size
        if len(trained.layers) != 1:
            raise ModelError(f"{spec.location} holds {len(trained.layers)} layers; a trained vector has one")
        trained.check_finite(str(spec.location))
        others = {h.base_fingerprint for h in self.handles.values() if isinstance(h, VectorHandle) and not h.control_of}
        if others and trained.model_fingerprint not in others:
            raise UsageError(f"solution {spec.name} was trained on another base model than the other vectors "
                             f"(fingerprint {trained.model_fingerprint[:12]})",
                             hint="compare solutions of one base model only")
        if trained.model_fingerprint != self.info.fingerprint:
            log.warning("%s was trained on %s (fingerprint %s), not on the model loaded here (%s, %s); "
                        "a different dtype also changes the fingerprint", spec.name, trained.model_id,
                        trained.model_fingerprint[:12], self.info.model_id, self.info.fingerprint[:12])
        return VectorHandle(name=spec.name, path=spec.path, vector=trained.to(self.device, torch.float32),
                            fingerprint=sha256_file(spec.location))

    def _add_adapter(self, spec: SolutionSpec) -> AdapterHandle:
        from peft import PeftModel

        internal = self._next_adapter_name()
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(spec.location), adapter_name=internal)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(spec.location), adapter_name=internal)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"adapter {spec.name} ({spec.location}) does not fit {self.info.model_id}: {first}",
                             hint="all solutions must be trained on the model given with -m") from None
        self.model.eval()
        weights = _adapter_weights_file(spec.location)
        return AdapterHandle(name=spec.name, path=spec.path, adapter_name=internal,
                             modules=self._lora_modules(internal), rank=self._rank(internal),
                             fingerprint=sha256_file(weights) if weights else "")

    def _next_adapter_name(self) -> str:
        self._adapter_count += 1
        return f"cmp{self._adapter_count}"

    def _rank(self, internal: str) -> int:
        return int(self.model.peft_config[internal].r)

    def _lora_modules(self, internal: str) -> list[LoraModule]:
        from peft.tuners.lora import LoraLayer

        modules = []
        for name, module in self.model.named_modules():
            if isinstance(module, LoraLayer) and internal in getattr(module, "lora_A", {}):
                a, b = module.lora_A[internal].weight, module.lora_B[internal].weight
                modules.append(LoraModule(name=name, a=a, b=b, a0=a.detach().clone(), b0=b.detach().clone(),
                                          scaling=float(module.scaling[internal])))
        if not modules:
            raise ModelError(f"adapter {internal} has no LoRA linear modules (lora_A/lora_B) to compare")
        return modules

    def add_random_controls(self, name: str, count: int, seed: int) -> list[Handle]:
        """`count` norm-matched random controls of solution `name`, named random<k>-<name>.

        Vector: a Gaussian vector at the same layer with the same ‖alpha·v‖ (`SteeringVector.random_like`).
        Adapter: a new adapter on the same modules with Gaussian A and B, both scaled by
        one factor per module so that its ‖B·A‖_F equals the solution's at that module.
        Seeds come from (seed, name, k), so controls of different solutions differ.
        """
        from em_cli.generation import row_seed

        source = self.handles[name]
        made = []
        for k in range(count):
            control_name = f"random{k}-{name}"
            control_seed = row_seed(seed, "random-control", name, k)
            if isinstance(source, VectorHandle):
                handle: Handle = self._random_vector(source, control_name, control_seed)
            else:
                handle = self._random_adapter(source, control_name, control_seed)
            self.handles[control_name] = handle
            made.append(handle)
        return made

    def _random_vector(self, source: VectorHandle, name: str, seed: int) -> VectorHandle:
        return VectorHandle(name=name, path="", vector=source.vector.random_like(seed).to(self.device),
                            fingerprint="", control_of=source.name, seed=seed)

    def _random_adapter(self, source: AdapterHandle, name: str, seed: int) -> AdapterHandle:
        import torch

        internal = self._next_adapter_name()
        self.model.add_adapter(internal, copy.deepcopy(self.model.peft_config[source.adapter_name]))
        self.model.eval()
        modules = self._lora_modules(internal)
        by_name = {m.name: m for m in source.modules}
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in modules:
                target = by_name[module.name].product_norm
                a = torch.randn(module.a.shape, generator=generator, dtype=torch.float64)
                b = torch.randn(module.b.shape, generator=generator, dtype=torch.float64)
                factor = (target / float((b @ a).norm())) ** 0.5
                module.a.copy_(a * factor)
                module.b.copy_(b * factor)
                module.a0, module.b0 = module.a.detach().clone(), module.b.detach().clone()
        return AdapterHandle(name=name, path="", adapter_name=internal, modules=modules, fingerprint="",
                             rank=source.rank, control_of=source.name, seed=seed)

    @contextlib.contextmanager
    def base(self) -> Iterator[None]:
        """The bare base model: adapters switched off, no vector hook."""
        with self._adapters_off():
            yield

    @contextlib.contextmanager
    def applied(self, name: str) -> Iterator[Handle]:
        """Only solution `name` is active inside the block; it is restored on exit."""
        handle = self.handles[name]
        try:
            if isinstance(handle, VectorHandle):
                with self._adapters_off(), intervene(self.model, {handle.layer: [handle.op]}):
                    yield handle
            else:
                self.model.set_adapter(handle.adapter_name, inference_mode=True)
                yield handle
        finally:
            handle.restore()

    def _adapters_off(self) -> contextlib.AbstractContextManager:
        # Checked without importing peft: vector-only comparisons never need it.
        return self.model.disable_adapter() if self._adapter_count else contextlib.nullcontext()

    def describe(self) -> list[dict[str, Any]]:
        return [h.describe() for h in self.handles.values()]

    def scaling_note(self) -> str | None:
        """A warning when adapters with different LoRA scalings are compared at equal norm."""
        scalings = {round(m.scaling, 8) for h in self.handles.values() if isinstance(h, AdapterHandle)
                    for m in h.modules}
        if len(scalings) > 1:
            return ("the adapters use different LoRA scalings (alpha/r): equal ‖B·A‖_F norms are not equal weight "
                    "changes; see effective_norm in the output")
        return None


def _adapter_weights_file(directory: Path) -> Path | None:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (directory / name).exists():
            return directory / name
    return None


def _nonzero(norm: float, name: str) -> float:
    if norm <= 0:
        raise ModelError(f"solution {name} has norm 0, so it cannot be rescaled to a target norm",
                         hint="was it trained for any steps?")
    return norm
