"""Stability (docs/METHODS.md §6): how fast the loss degrades under norm-preserving noise.

For each solution, ε and seed: perturb it (the vector; or every LoRA A and B matrix on its
own) with x′ = √(1−ε²)·x + ε·y, measure the loss, and report the relative loss increase
100·(L_perturbed − L_orig)/(L_base − L_orig): 0% = as trained, 100% = as bad as no finetune.
Mean ± sample std over seeds. The paper's claim: the general solution rises more slowly.
Beside ε, each draw records the measured cosine between the perturbed and the original
solution (for adapters, of B·A, ≈ 1−ε²): the honest x-axis when vectors and adapters meet.

Cost: exactly #ε × #seeds × #solutions perturbed losses, plus 1 + #solutions baselines
(L_base once, L_orig per solution), on one model load. Seed k builds the same noise
generator for every ε and every solution (common random numbers), so curves are smooth in
ε and differences between solutions are not noise-draw luck. Random controls take no part:
their L_orig ≈ L_base, which leaves the ratio without a denominator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from em_cli.comparison.loss import CountedLoss

if TYPE_CHECKING:
    from em_cli.comparison.bench import SolutionBench

EPSILONS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
QUICK_EPSILONS = (0.1, 0.5, 1.0)
SEEDS = 10
QUICK_SEEDS = 2


@dataclass
class StabilityCurve:
    name: str
    original_loss: float
    gap: float  # L_base − L_orig: what the solution gained over the base model
    losses: list[list[float]]  # [epsilon][seed]
    relative: list[list[float | None]]  # relative loss increase in %, [epsilon][seed]
    mean: list[float | None]
    std: list[float | None]
    # Measured cosine between the perturbed and the original solution, [epsilon][seed]: the
    # vector itself (√(1−ε²)), or an adapter's B·A averaged over modules (≈ 1−ε²).
    cosines: list[list[float | None]]
    cosine_mean: list[float | None]


@dataclass
class StabilityResult:
    base_loss: float
    epsilons: list[float]
    seeds: int
    base_seed: int
    curves: dict[str, StabilityCurve]
    evaluations: int
    planned_evaluations: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def planned_evaluations(solutions: int, epsilons: Sequence[float], seeds: int) -> int:
    """#ε × #seeds × #solutions perturbed losses, plus L_base and one L_orig per solution."""
    return len(epsilons) * seeds * solutions + 1 + solutions


def relative_increase(perturbed: float, original: float, base: float) -> float | None:
    """100·(L_perturbed − L_orig)/(L_base − L_orig); None when the solution does not beat the
    base model (the ratio would be meaningless)."""
    gap = base - original
    if not gap > 0:
        return None
    return 100.0 * (perturbed - original) / gap


def noise_seed(base_seed: int, k: int) -> int:
    from em_cli.generation import row_seed

    return row_seed(base_seed, "stability", k)


def measure_stability(bench: SolutionBench, names: Sequence[str], evaluate: Callable[[Any], float],
                      epsilons: Sequence[float], seeds: int, base_seed: int = 0,
                      on_evaluation: Callable[[], None] | None = None) -> StabilityResult:
    """The ε × seed grid for each of `names`; `evaluate(model)` is the loss."""
    import torch

    loss = CountedLoss(lambda: evaluate(bench.model), on_evaluation)

    with bench.base():
        base_loss = loss()
    curves = {}
    for name in names:
        with bench.applied(name) as handle:
            handle.restore()
            original = loss()
            grid: list[list[float]] = []
            cosines: list[list[float | None]] = []
            for epsilon in epsilons:
                row, cos_row = [], []
                for k in range(seeds):
                    cos_row.append(handle.perturb(epsilon, torch.Generator().manual_seed(noise_seed(base_seed, k))))
                    row.append(loss())
                grid.append(row)
                cosines.append(cos_row)
        relative = [[relative_increase(value, original, base_loss) for value in row] for row in grid]
        means, stds = zip(*(_mean_std(row) for row in relative), strict=True) if relative else ((), ())
        curves[name] = StabilityCurve(name=name, original_loss=original, gap=base_loss - original, losses=grid,
                                      relative=relative, mean=list(means), std=list(stds), cosines=cosines,
                                      cosine_mean=[_mean_std(row)[0] for row in cosines])
    return StabilityResult(base_loss=base_loss, epsilons=list(epsilons), seeds=seeds, base_seed=base_seed,
                           curves=curves, evaluations=loss.calls,
                           planned_evaluations=planned_evaluations(len(names), epsilons, seeds))


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    kept = [v for v in values if v is not None]
    if not kept:
        return None, None
    mean = sum(kept) / len(kept)
    if len(kept) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))
