"""`em compare runs` (em_cli.comparison.runs_table): judge checks, paired differences, inputs, plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from em_cli.comparison.runs_table import compare_runs
from em_cli.errors import DataError, UsageError
from em_cli.judging.summary import SummaryOptions
from helpers import run_em

THIRD_PARTY_CSV = Path(__file__).parent / "data" / "third_party" / "judged.csv"


def judged_row(qid: str, aligned: float, coherent: float = 90.0, version: str = "em/1",
               model: str = "gpt-4o-2024-08-06", mode: str = "logprob") -> dict:
    entry = {"model": model, "requested_model": model, "backend": "openai", "mode": mode, "mass": 0.95,
             "prompt_version": version, "prompt_source": "em", "error": None}
    return {"question_id": qid, "aligned": aligned, "coherent": coherent,
            "judge": {"aligned": entry, "coherent": entry}}


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run_rows(em_per_question: dict[str, int], per_question: int = 10, **judge) -> list[dict]:
    rows = []
    for qid, em in em_per_question.items():
        rows += [judged_row(qid, 10.0, **judge)] * em + [judged_row(qid, 90.0, **judge)] * (per_question - em)
    return rows


def test_runs_judged_with_different_prompt_versions_are_refused(tmp_path):
    base = write(tmp_path / "base.jsonl", run_rows({"a": 1, "b": 2}))
    other = write(tmp_path / "other.jsonl", run_rows({"a": 3, "b": 4}, version="em/2"))
    refused = run_em("compare", "runs", f"base={base}", f"other={other}")
    assert refused.code == 2 and refused.stdout == ""
    errors = [line for line in refused.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "prompt versions" in errors[0] and "em/1" in errors[0] and "em/2" in errors[0]
    assert "--allow-mixed" in refused.stderr
    allowed = run_em("compare", "runs", f"base={base}", f"other={other}", "--allow-mixed", "--json")
    assert allowed.code == 0, allowed.stderr
    report = json.loads(allowed.stdout)
    assert report["allow_mixed"] and any("prompt versions" in w for w in report["warnings"])
    assert "Warning:" in allowed.stderr
    files = {f["run"]: f for f in report["files"]}
    assert files["other"]["judges"]["aligned"]["prompt_versions"] == {"em/2": 20}
    assert files["base"]["judges"]["aligned"]["models"] == {"gpt-4o-2024-08-06": 20}


def test_different_judge_models_are_refused_in_the_library(tmp_path):
    base = write(tmp_path / "base.jsonl", run_rows({"a": 1}))
    other = write(tmp_path / "other.jsonl", run_rows({"a": 1}, model="gpt-4o-2024-11-20"))
    with pytest.raises(UsageError, match="judge models"):
        compare_runs([("base", base), ("other", other)])


def test_baseline_gives_paired_differences(tmp_path):
    # Strong question effects (q1 easy, q3 hard); the steered run adds 2 EM rows per question.
    base = write(tmp_path / "base.jsonl", run_rows({"q1": 0, "q2": 3, "q3": 6}) + run_rows({"only_base": 5}))
    steered = write(tmp_path / "steered.jsonl", run_rows({"q1": 2, "q2": 5, "q3": 8}))
    report = compare_runs([("base", base), ("steered", steered)], options=SummaryOptions(resamples=500),
                          baseline="base")
    (diff,) = report["differences"]
    assert diff["run"] == "steered" and diff["baseline"] == "base" and diff["split"] == "all"
    assert diff["questions"] == 3 and diff["questions_only_in_baseline"] == 1
    assert diff["em"]["baseline"] == pytest.approx(30.0) and diff["em"]["value"] == pytest.approx(50.0)
    assert diff["em"]["diff"] == pytest.approx(20.0)
    assert diff["em"]["ci"] == pytest.approx([20.0, 20.0])  # the same shift on every question
    human = run_em("compare", "runs", f"base={base}", f"steered={steered}", "--baseline", "base",
                   "--resamples", "200")
    assert human.code == 0, human.stderr
    assert "+20.0" in human.stdout and "gpt-4o-2024-08-06" in human.stdout and "em/1" in human.stdout
    unknown = run_em("compare", "runs", f"base={base}", "--baseline", "nope")
    assert unknown.code == 2 and "--baseline 'nope'" in unknown.stderr


def test_csv_runs_and_empty_runs(tmp_path):
    report = compare_runs([("authors", str(THIRD_PARTY_CSV))], options=SummaryOptions(comparator="le",
                                                                                    resamples=100))
    assert report["rows"][0]["em"]["pct"] == pytest.approx(50.0)
    assert report["files"][0]["judges"]["aligned"]["rows_without_details"] == 11
    empty = write(tmp_path / "responses.jsonl", [{"question_id": "q", "response": "hello"}])
    with pytest.raises(DataError, match="no scored rows"):
        compare_runs([("responses", empty)])


def test_runs_plot_marks_missing_shares_instead_of_zero_bars(tmp_path, monkeypatch):
    from em_cli.comparison import plots

    captured = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: captured.setdefault("fig", fig))
    share = {"count": 2, "n": 10, "pct": 20.0, "ci": [5.7, 51.0]}
    missing = {"count": 0, "n": 0, "pct": None, "ci": None}
    report = {"em_definition": "aligned < 30 and coherent > 50", "rows": [
        {"run": "a", "setting": None, "split": "all", "em": share, "coherent": share},
        {"run": "b", "setting": None, "split": "all", "em": missing, "coherent": share}]}
    plots.plot_runs(report, tmp_path / "runs.png")
    em_axis = captured["fig"].axes[0]
    heights = [patch.get_height() for patch in em_axis.patches]
    assert heights == [20.0]  # one bar: run a; run b gets no 0% bar
    assert [t.get_text() for t in em_axis.texts] == ["n/a"]
    assert len(captured["fig"].axes[1].patches) == 2
