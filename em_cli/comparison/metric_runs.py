"""One call per loss- or KL-based `em compare` metric: grids, measurement, timing, report.

`run_efficiency`, `run_stability` and `run_kl` check their grids (`quick` picks the small
defaults), open the solutions on the base model (`session.open_bench`), measure with a
progress bar and return the `MetricRun` whose report and manifest the command writes. The command passes
its progress bar class (called as `progress(total, description)`, a context manager with
`advance(n)`) and an object with `log` and `warn` for notes, so this module prints nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from em_cli.comparison.session import MetricRun, OpenedBench
    from em_cli.models.loading import LoadOptions


class Bar(Protocol):
    def advance(self, rows: int) -> None: ...


class Notes(Protocol):
    def log(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...


Progress = Callable[[int, str], AbstractContextManager[Bar]]


@dataclass(frozen=True)
class Solutions:
    """NAME=PATH solutions to load onto the base model of `options`, with `controls` seeded
    norm-matched random controls each."""

    specs: list[str]
    options: LoadOptions
    controls: int = 0
    seed: int = 0

    def open(self, notes: Notes) -> OpenedBench:
        """Load the base model once with every solution on it; its notes and warnings go to `notes`."""
        from em_cli.comparison.session import open_bench

        opened = open_bench(self.specs, self.options, self.controls, self.seed)
        for warning in opened.warnings:
            notes.warn(warning)
        for note in opened.notes:
            notes.log(note)
        return opened


@dataclass(frozen=True)
class LossData:
    """The rows the loss is measured on: `rows` seeded rows of the chat JSONL `data`."""

    data: str
    rows: int
    seed: int = 0
    max_length: int = 512
    batch_size: int = 8


def timing(seconds: float, evaluations: int) -> dict[str, float]:
    """The report's timing keys for `evaluations` measured in `seconds`."""
    return {"wall_time_s": round(seconds, 3), "seconds_per_evaluation": round(seconds / max(evaluations, 1), 4)}


def run_efficiency(solutions: Solutions, loss: LossData, scales: Sequence[float] | None,
                   fractions: Sequence[float] | None, quick: bool, settings: dict[str, Any], notes: Notes,
                   progress: Progress) -> MetricRun:
    """Loss against each solution's own scale and at equal norms (docs/METHODS.md §6)."""
    from em_cli.comparison import efficiency as metric
    from em_cli.comparison.session import MetricRun, loss_evaluator

    started = time.time()
    grid = list(scales or (metric.QUICK_SCALES if quick else metric.RELATIVE_SCALES))
    targets = list(fractions or (metric.QUICK_FRACTIONS if quick else metric.NORM_FRACTIONS))
    opened = solutions.open(notes)
    loss_rows, evaluate = loss_evaluator(opened.loaded, loss.data, loss.rows, loss.seed, loss.max_length,
                                         loss.batch_size, notes.warn)
    measured = time.perf_counter()
    with progress(metric.planned_evaluations(len(opened.bench.names), grid, targets), "loss evaluations") as bar:
        result = metric.measure_efficiency(opened.bench, evaluate, grid, targets, on_evaluation=lambda: bar.advance(1))
    seconds = time.perf_counter() - measured
    return MetricRun("efficiency", opened, settings | {"rows": loss.rows, "scales": grid, "norm_fractions": targets},
                     result, result.evaluations, started,
                     extra={"data": loss_rows.describe(), **timing(seconds, result.evaluations)})


def run_stability(solutions: Solutions, loss: LossData, epsilons: Sequence[float] | None, draws: int | None,
                  quick: bool, settings: dict[str, Any], notes: Notes, progress: Progress) -> MetricRun:
    """Relative loss increase under norm-preserving orthogonal noise (docs/METHODS.md §6)."""
    from em_cli.comparison import stability as metric
    from em_cli.comparison.session import MetricRun, loss_evaluator
    from em_cli.errors import UsageError

    started = time.time()
    grid = list(epsilons or (metric.QUICK_EPSILONS if quick else metric.EPSILONS))
    if any(not 0.0 <= e <= 1.0 for e in grid):
        raise UsageError("--epsilons must lie in [0, 1]")
    draws = draws or (metric.QUICK_SEEDS if quick else metric.SEEDS)
    opened = solutions.open(notes)
    bench = opened.bench
    loss_rows, evaluate = loss_evaluator(opened.loaded, loss.data, loss.rows, loss.seed, loss.max_length,
                                         loss.batch_size, notes.warn)
    total = metric.planned_evaluations(len(bench.names), grid, draws)
    notes.log(f"{len(grid)} ε × {draws} draws × {len(bench.names)} solutions + {1 + len(bench.names)} baselines = "
              f"{total} loss evaluations")
    measured = time.perf_counter()
    with progress(total, "loss evaluations") as bar:
        result = metric.measure_stability(bench, bench.names, evaluate, grid, draws, loss.seed,
                                          on_evaluation=lambda: bar.advance(1))
    seconds = time.perf_counter() - measured
    for name, curve in result.curves.items():
        if curve.gap <= 0:
            notes.warn(f"{name} does not beat the base model on this data (L_base − L_orig = {curve.gap:.4g}): "
                       "its relative increase is undefined (null)")
    return MetricRun("stability", opened, settings | {"rows": loss.rows, "epsilons": grid, "draws": draws}, result,
                     result.evaluations, started,
                     extra={"data": loss_rows.describe(), "planned_evaluations": result.planned_evaluations,
                            "evaluator_calls": evaluate.calls, **timing(seconds, result.evaluations),
                            "relative_increase": "100·(L_perturbed − L_orig)/(L_base − L_orig); "
                                                 "std: sample std over draws"})


def text_count(texts: int | None, quick: bool) -> int:
    """How many texts `em compare kl` measures on: `texts`, else 50 (8 with --quick)."""
    return texts or (8 if quick else 50)


def run_kl(solutions: Solutions, external: tuple[list[str], dict[str, Any]] | None, count: int,
           text_tokens: int | None, prompt_tokens: int, multiples: Sequence[float] | None,
           fractions: Sequence[float] | None, quick: bool, settings: dict[str, Any], notes: Notes,
           progress: Progress) -> MetricRun:
    """KL(P_base ‖ P_steered) per token across a norm grid, on `external` texts (from
    `texts.external_texts`) or, with None, on `count` texts sampled from the base model
    (`text_count` gives the default; docs/METHODS.md §6)."""
    from em_cli.comparison import pretraining_kl as metric
    from em_cli.comparison.session import MetricRun

    started = time.time()
    grid = list(multiples or (metric.QUICK_MULTIPLES if quick else metric.NORM_MULTIPLES))
    targets = list(fractions or (metric.QUICK_EQUAL_NORM_FRACTIONS if quick else metric.EQUAL_NORM_FRACTIONS))
    opened = solutions.open(notes)
    bench, seed, batch_size = opened.bench, settings["seed"], settings["batch_size"]
    has_adapters = any(h.kind == "adapter" for h in bench.handles.values())
    to_sample = count if external is None else (len(external[0]) if has_adapters else 0)
    sampling_started = time.perf_counter()
    with progress(to_sample, "sampling base-model text") as bar:
        groups = metric.text_groups(bench, external, count, text_tokens, prompt_tokens, seed, batch_size,
                                    on_batch=bar.advance)
    sampling_seconds = time.perf_counter() - sampling_started
    batches = [(-(-len(g[0].texts) // batch_size), len(g[1])) for g in groups]
    measured = time.perf_counter()
    with progress(metric.planned_forward_passes(batches, grid, targets), "forward passes") as bar:
        result = metric.measure_kl(bench, groups, grid, batch_size, on_forward=lambda: bar.advance(1),
                                   fractions=targets)
    seconds = time.perf_counter() - measured
    labels = "; ".join(dict.fromkeys(t.get("label", t.get("kind", "?")) for t in result.text_sets))
    return MetricRun("kl", opened, settings | {"texts": count, "text_tokens": text_tokens, "multiples": grid,
                                               "norm_fractions": targets}, result, result.forward_passes, started,
                     extra={"text": labels, "text_source": result.text_sets,
                            "wall_time_s": round(seconds + sampling_seconds, 3),
                            "sampling_time_s": round(sampling_seconds, 3),
                            "kl_definition": "per-token mean of KL(P_base ‖ P_steered) in nats over scored "
                                             "non-padding positions"})
