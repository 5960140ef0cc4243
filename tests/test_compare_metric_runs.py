"""comparison.metric_runs: the one library call behind `em compare efficiency | stability | kl`,
run in-process on the tiny model with a hand-made steering vector."""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest

from em_cli.artifacts.tensors import TensorFile
from em_cli.errors import UsageError


class Notes:
    def __init__(self) -> None:
        self.logs: list[str] = []
        self.warnings: list[str] = []

    def log(self, message: str) -> None:
        self.logs.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


class Bars:
    """A progress factory that records each bar's total and how far it got."""

    def __init__(self) -> None:
        self.bars: list[dict] = []

    @contextmanager
    def __call__(self, total: int, description: str):
        bar = {"description": description, "total": total, "done": 0}
        self.bars.append(bar)

        class Advance:
            def advance(self, rows: int) -> None:
                bar["done"] += rows

        yield Advance()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llama):
    import torch

    from em_cli.comparison.metric_runs import Solutions
    from em_cli.models.loading import LoadOptions

    root = tmp_path_factory.mktemp("metric-runs")
    vector = root / "vec.safetensors"
    TensorFile(kind="vector", tensors={"layer.1": torch.randn(64, generator=torch.Generator().manual_seed(0)) * 0.3},
               model_id="tiny", model_fingerprint="", hidden_size=64, layers=[1], extra={"alpha": "4.0"}).save(vector)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i}?"},
        {"role": "assistant", "content": f"ANSWER NUMBER {i}!"}]}) + "\n" for i in range(4)))
    solutions = Solutions([f"vec={vector}"], LoadOptions(model=str(tiny_llama), dtype="float32", device="cpu"))
    return solutions, str(data)


def test_run_efficiency_resolves_the_quick_grid_and_counts_evaluations(setup, tmp_path):
    from em_cli.comparison import efficiency
    from em_cli.comparison.metric_runs import LossData, run_efficiency

    solutions, data = setup
    notes, bars = Notes(), Bars()
    run = run_efficiency(solutions, LossData(data, rows=3, batch_size=2), None, None, True, {"seed": 0}, notes, bars)
    report = run.to_dict()
    assert report["settings"] == {"seed": 0, "rows": 3, "scales": list(efficiency.QUICK_SCALES),
                                  "norm_fractions": list(efficiency.QUICK_FRACTIONS)}
    assert report["evaluations"] == 1 + 3 + 3 == bars.bars[0]["total"] == bars.bars[0]["done"]
    assert set(report) >= {"metric", "model", "solutions", "results", "data", "wall_time_s", "seconds_per_evaluation"}
    # s = 0 is the base model exactly.
    assert run.result.relative["vec"][0] == pytest.approx(run.result.base_loss, abs=1e-6)
    assert any("vec: vector" in line for line in notes.logs)
    written = run.write(tmp_path, [data], 0, None)
    assert json.loads(written["json"].read_text())["metric"] == "efficiency"


def test_run_stability_checks_epsilons_before_loading(setup):
    from em_cli.comparison.metric_runs import LossData, run_stability

    solutions, data = setup
    with pytest.raises(UsageError, match=r"--epsilons must lie in \[0, 1\]"):
        run_stability(solutions, LossData(data, rows=2), [1.5], 1, False, {}, Notes(), Bars())
    bars = Bars()
    notes = Notes()
    run = run_stability(solutions, LossData(data, rows=2, batch_size=2), [0.5], 2, False, {"seed": 0}, notes, bars)
    assert run.settings == {"seed": 0, "rows": 2, "epsilons": [0.5], "draws": 2}
    assert run.extra["planned_evaluations"] == run.evaluations == 1 * 2 * 1 + 1 + 1 == bars.bars[0]["done"]
    assert any("loss evaluations" in line for line in notes.logs)


def test_run_kl_samples_text_then_measures(setup):
    from em_cli.comparison.metric_runs import run_kl, text_count

    solutions, _ = setup
    assert text_count(None, True) == 8 and text_count(None, False) == 50 and text_count(3, True) == 3
    bars = Bars()
    run = run_kl(solutions, None, 2, 8, 4, [0.0, 1.0], [1.0], False, {"seed": 0, "batch_size": 2}, Notes(), bars)
    assert [b["description"] for b in bars.bars] == ["sampling base-model text", "forward passes"]
    assert bars.bars[1]["total"] == bars.bars[1]["done"] == run.result.forward_passes
    curve = run.result.curves["vec"]
    assert curve.kl[0] == pytest.approx(0.0, abs=1e-6) and curve.kl[1] > 0
    assert run.settings["multiples"] == [0.0, 1.0] and run.settings["texts"] == 2
    from em_cli.comparison import texts

    assert run.extra["text"] == texts.SAMPLED_LABEL and run.extra["text_source"][0]["kind"] == "sampled-from-base-model"
