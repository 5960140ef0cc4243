"""Efficiency (docs/METHODS.md §6): how much loss a solution buys per unit of norm.

Two sweeps, one base model, weights rescaled in place:

- relative: each solution at s × its own norm, s ∈ 0..2 (s = 0 is the base model exactly,
  s = 1 the solution as trained);
- equal norm: every solution at the same absolute norms p × (mean norm of the trained
  solutions of its kind), p ∈ 0.2..2. Vectors and adapters are grouped apart, since ‖alpha·v‖
  and mean ‖B·A‖_F are not in the same units.

The paper's claim: the general solution reaches lower loss at the same norm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from em_cli.comparison.loss import CountedLoss

if TYPE_CHECKING:
    from em_cli.comparison.bench import SolutionBench

RELATIVE_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
QUICK_SCALES = (0.0, 1.0, 2.0)
NORM_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0)
QUICK_FRACTIONS = (0.5, 1.0, 2.0)


@dataclass
class EqualNormSweep:
    kind: str
    reference_norm: float  # mean norm of the trained solutions of this kind
    fractions: list[float]
    targets: list[float]  # absolute norms = fraction × reference_norm
    losses: dict[str, list[float]]


@dataclass
class EfficiencyResult:
    base_loss: float
    scales: list[float]
    relative: dict[str, list[float]]  # name → loss at each relative scale
    norms: dict[str, float]
    equal_norm: list[EqualNormSweep]
    evaluations: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def planned_evaluations(solutions: int, scales: Sequence[float], fractions: Sequence[float]) -> int:
    """One base-model loss plus one loss per solution × grid point of each sweep."""
    return 1 + solutions * (len(scales) + len(fractions))


def measure_efficiency(bench: SolutionBench, evaluate: Callable[[Any], float], scales: Sequence[float],
                       fractions: Sequence[float], on_evaluation: Callable[[], None] | None = None,
                       names: Sequence[str] | None = None) -> EfficiencyResult:
    """Run both sweeps over `names` (default: every solution of `bench`); `evaluate(model)`
    is the loss."""
    names = list(names) if names is not None else bench.names
    loss = CountedLoss(lambda: evaluate(bench.model), on_evaluation)

    with bench.base():
        base_loss = loss()
    relative = {name: _sweep(bench, name, loss, scales, lambda handle, s: handle.set_scale(s)) for name in names}
    sweeps = []
    for kind, members in _by_kind(bench, names).items():
        trained = [n for n in members if not bench.handles[n].control_of] or members
        reference = sum(bench.handles[n].norm for n in trained) / len(trained)
        targets = [p * reference for p in fractions]
        losses = {name: _sweep(bench, name, loss, targets, lambda handle, t: handle.set_norm(t)) for name in members}
        sweeps.append(EqualNormSweep(kind=kind, reference_norm=reference, fractions=list(fractions), targets=targets,
                                     losses=losses))
    return EfficiencyResult(base_loss=base_loss, scales=list(scales), relative=relative,
                            norms={n: bench.handles[n].norm for n in names}, equal_norm=sweeps,
                            evaluations=loss.calls)


def _sweep(bench: SolutionBench, name: str, loss: CountedLoss, values: Sequence[float],
           set_value: Callable[[Any, float], None]) -> list[float]:
    """The loss with solution `name` applied at each of `values` (a scale or a norm, set by `set_value`)."""
    losses = []
    with bench.applied(name) as handle:
        for value in values:
            set_value(handle, value)
            losses.append(loss())
    return losses


def _by_kind(bench: SolutionBench, names: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(bench.handles[name].kind, []).append(name)
    return groups
