"""One comparison run: the solutions on one loaded base model, the loss data, and the report.

`em compare efficiency | stability | kl` share everything but the measurement: they open a
`SolutionBench` (`open_bench`), optionally draw the loss rows (`loss_evaluator`), and write a
report with the same common keys (`MetricRun`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_cli.comparison.bench import NORM_DEFINITION

if TYPE_CHECKING:
    from em_cli.comparison.bench import SolutionBench
    from em_cli.comparison.loss import LossEvaluator, LossRows
    from em_cli.models.loading import LoadedModel, LoadOptions


@dataclass
class OpenedBench:
    """A loaded base model with every solution (and random control) on it, and what to tell the user."""

    loaded: LoadedModel
    bench: SolutionBench
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def open_bench(items: Sequence[str], options: LoadOptions, controls: int = 0, seed: int = 0) -> OpenedBench:
    """Parse NAME=PATH solutions, load the base model once and put every solution on it."""
    from em_cli.comparison.bench import SolutionBench, parse_solution_args
    from em_cli.models.loading import load_model

    specs = parse_solution_args(items)
    loaded = load_model(options)
    opened = OpenedBench(loaded=loaded, bench=SolutionBench(loaded))
    if loaded.cache_note:
        opened.notes.append(loaded.cache_note)
    for spec in specs:
        opened.bench.add(spec)
    for spec in specs:
        opened.bench.add_random_controls(spec.name, controls, seed)
    note = opened.bench.scaling_note()
    if note:
        opened.warnings.append(note)
    opened.notes += [f"{h.name}: {h.kind}, norm {h.norm:.4g}" for h in opened.bench.handles.values() if not h.control_of]
    return opened


def loss_evaluator(loaded: LoadedModel, data: str, rows: int, seed: int, max_length: int, batch_size: int,
                   warn: Callable[[str], None]) -> tuple[LossRows, LossEvaluator]:
    """The seeded loss rows of `data` and an evaluator over them (docs/METHODS.md §6)."""
    from em_cli.comparison.loss import LossEvaluator, load_loss_rows
    from em_cli.models.batching import pad_token_id
    from em_cli.generation import stop_token_ids

    tokenizer = loaded.tokenizer
    loss_rows = load_loss_rows(data, tokenizer, stop_token_ids(loaded.model, tokenizer), rows, seed, max_length)
    if len(loss_rows.examples) < rows:
        warn(f"{data} has {len(loss_rows.examples)} usable rows, fewer than --rows {rows}: using them all")
    return loss_rows, LossEvaluator(loss_rows, pad_token_id(tokenizer), batch_size)


@dataclass
class MetricRun:
    """One metric's report: the keys every metric writes, then the metric's own (`extra`)."""

    metric: str
    opened: OpenedBench
    settings: dict[str, Any]
    result: Any  # the metric's result object: to_dict()
    evaluations: int
    started: float  # time.time() when the command began
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "model": self.opened.loaded.identity(),
                "solutions": self.opened.bench.describe(), "settings": self.settings,
                "results": self.result.to_dict(), "evaluations": self.evaluations,
                "norm_definition": NORM_DEFINITION, **self.extra}

    def write(self, outdir: str | Path, inputs: list[str], seed: int | None,
              plot: Callable[[dict[str, Any], Path], None] | None) -> dict[str, Path]:
        """OUTDIR/<metric>.json, the plot and the manifest; returns the paths written."""
        from em_cli.artifacts.manifest import Manifest
        from em_cli.comparison.report import write_report

        report = self.to_dict()
        manifest = Manifest(command=f"compare {self.metric}", options=self.settings, inputs=inputs, seed=seed,
                            started=self.started)
        manifest.results = {key: report[key] for key in ("wall_time_s", "evaluations") if key in report}
        return write_report(outdir, self.metric, report, manifest, plot)
