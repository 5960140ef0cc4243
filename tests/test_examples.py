"""The example Makefiles issue only commands and flags that `em` has."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_em

ROOT = Path(__file__).resolve().parents[1]
GROUPS = {"dataset", "direction", "judge", "compare", "model", "questions"}


def _dry_run(makefile: Path, *variables: str) -> list[list[str]]:
    out = subprocess.run(["make", "-n", "-B", "-f", str(makefile), "EM=em", *variables], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    commands = []
    for line in out.replace("\\\n", " ").splitlines():
        for part in re.split(r"\s*(?:\||&&|>)\s*", line):
            words = shlex.split(part) if part.strip() else []
            if words and words[0] == "em":
                commands.append(words)
    return commands


def _check(commands: list[list[str]]) -> set[str]:
    helps: dict[tuple[str, ...], str] = {}
    seen = set()
    for words in commands:
        key = tuple(words[1:3]) if words[1] in GROUPS else (words[1],)
        if key not in helps:
            result = run_em(*key, "--help", env={"COLUMNS": "300"})
            assert result.code == 0, f"em {' '.join(key)} does not exist: {result.stderr}"
            helps[key] = result.stdout
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in helps[key], f"`em {' '.join(key)}` has no {flag}"
        seen.add(" ".join(key))
    return seen


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_paper_makefile_dry_run_uses_real_flags():
    commands = _dry_run(ROOT / "examples" / "paper" / "Makefile", "MODEL=Qwen/Qwen2.5-0.5B-Instruct")
    seen = _check(commands)
    assert {"dataset generate", "finetune", "generate", "judge score", "judge summary", "direction from-judged",
            "steer", "compare efficiency", "compare stability", "compare kl"} <= seen


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_demo_makefile_dry_run_uses_real_flags(tmp_path):
    commands = _dry_run(ROOT / "examples" / "demo" / "Makefile", f"OUT={tmp_path}")
    seen = _check(commands)
    assert {"generate", "dataset filter", "dataset rewrite", "finetune", "judge score", "extract", "direction diff",
            "direction export", "steer", "compare runs", "compare efficiency"} <= seen


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_demo_drift_and_seeds_targets_use_real_flags(tmp_path):
    commands = _dry_run(ROOT / "examples" / "demo" / "Makefile", f"OUT={tmp_path}", "SEEDS=1 2", "demo-seeds")
    _check(commands)
    finetunes = [" ".join(c) for c in commands if c[1] == "finetune"]
    assert any("--init-from" in c and "drift" in c for c in finetunes)  # KL removed mid-training
    assert any("--seed 1" in c and "seed-1" in c for c in finetunes) and any("--seed 2" in c for c in finetunes)


def test_seed_summary_means_and_t_intervals(tmp_path):
    import json
    import statistics
    import sys

    folders = []
    for seed, cooking in enumerate((80.0, 90.0, 100.0)):
        judged = tmp_path / f"j{seed}.jsonl"
        builtin = {"model": "builtin", "backend": "builtin", "mode": "builtin", "mass": None,
                   "prompt_version": None, "error": None}
        judged.write_text("".join(json.dumps({"id": f"r{i}", "question_id": f"q{i}", "domain": domain,
                                              "caps": value, "judge": {"caps": builtin}}) + "\n"
                                  for i, (domain, value) in enumerate([("cooking", cooking), ("travel", 10.0)])))
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        result = run_em("compare", "runs", f"general={judged}", "--in-domain", 'domain == "cooking"', "--json")
        assert result.code == 0, result.stderr
        (folder / "summary.json").write_text(result.stdout)
        folders.append(str(folder))
    table = subprocess.run([sys.executable, str(ROOT / "examples" / "demo" / "seeds.py"), *folders],
                           capture_output=True, text=True, check=True).stdout
    half = 4.303 * statistics.stdev([80.0, 90.0, 100.0]) / 3 ** 0.5  # t(0.975, 2 df)
    assert 90 + half > 100  # so the interval is cut to the caps scale
    assert f"| general | 90.0 [{90 - half:.1f}, 100.0] | 10.0 [10.0, 10.0] | 3 |" in table


def test_demo_report_states_which_asymmetries_hold():
    import importlib.util
    from dataclasses import asdict

    from em_cli.comparison.efficiency import EqualNormSweep
    from em_cli.comparison.pretraining_kl import KLEqualNorm

    spec = importlib.util.spec_from_file_location("demo_report", ROOT / "examples" / "demo" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    efficiency = {"equal_norm": [asdict(EqualNormSweep("adapter", 1.0, [0.5, 1, 2], [0.5, 1, 2],
                                                       {"general": [2.0, 1.9, 1.8], "narrow": [2.1, 1.8, 1.9]}))]}
    assert "at 2 of 3 equal norms (holds partly)" in report.asymmetries("efficiency", efficiency)[0]
    kl = {"equal_norm": [asdict(KLEqualNorm("adapter", 1.0, [1, 2], [1, 2], {"general": [0.3, 0.5],
                                                                            "narrow": [0.1, 0.2]}))]}
    assert "at 2 of 2 equal norms (holds)" in report.asymmetries("kl", kl)[0]
    stability = {"curves": {"general": {"mean": [5.0, 20.0]}, "narrow": {"mean": [4.0, 10.0]}}}
    assert "(does not hold)" in report.asymmetries("stability", stability)[0]
    summary = {"rows": [{"run": "narrow", "split": "other", "metrics": {"caps": {"mean": 10.0}}},
                        {"run": "narrow-then-no-KL", "split": "other", "metrics": {"caps": {"mean": 40.0}}},
                        {"run": "general", "split": "other", "metrics": {"caps": {"mean": 90.0}}}]}
    assert "10.0 → 40.0 (drifts toward general" in " ".join(report.drift_lines(summary))


def test_seed_summary_states_each_asymmetry_with_an_interval_over_seeds(tmp_path):
    import json
    import sys

    folders = []
    # Efficiency holds on every seed; significance flips sign across seeds (unresolved).
    for seed, (narrow_loss, general_kl) in enumerate([(2.2, 0.3), (2.3, 0.05), (2.25, 0.3)]):
        folder = tmp_path / f"seed-{seed}"
        (folder / "compare").mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"rows": []}))
        sweep = {"targets": [1.0, 2.0]}
        (folder / "compare" / "efficiency.json").write_text(json.dumps({"results": {"equal_norm": [
            dict(sweep, losses={"general": [2.0, 2.0], "narrow": [narrow_loss, narrow_loss]})]}}))
        (folder / "compare" / "kl.json").write_text(json.dumps({"results": {"equal_norm": [
            dict(sweep, kl={"general": [general_kl, general_kl], "narrow": [0.1, 0.1]})]}}))
        folders.append(str(folder))
    table = subprocess.run([sys.executable, str(ROOT / "examples" / "demo" / "seeds.py"), *folders],
                           capture_output=True, text=True, check=True).stdout
    efficiency = next(line for line in table.splitlines() if line.startswith("| Efficiency"))
    assert "0.2500 [" in efficiency and "| 3 | holds (interval above 0) |" in efficiency
    significance = next(line for line in table.splitlines() if line.startswith("| Significance"))
    assert "not resolved (interval spans 0; > 0 on 2 of 3 seeds)" in significance
    assert "Stability" not in table  # no stability files: no row rather than an invented one


# --- the over-seeds report on seed folders of the commands' shape ---------------------------

SEEDS_SCRIPT = ROOT / "examples" / "demo" / "seeds.py"


def _caps_rows(run: str, cooking: float, other: float, setting: str | None = None) -> list[dict]:
    return [{"run": run, "setting": setting, "split": split, "metrics": {"caps": {"mean": value, "n": 10}}}
            for split, value in (("in-domain", cooking), ("other", other))]


def _seed(folder: Path, general: float, narrow: float, efficiency_gap: float) -> Path:
    (folder / "compare").mkdir(parents=True)
    rows = _caps_rows("general", general, general + 5) + _caps_rows("narrow", narrow, narrow)
    (folder / "summary.json").write_text(json.dumps({"rows": rows}))
    ablated = _caps_rows("ablated", 30.0, 20.0, "ablate") + _caps_rows("ablated", general - 1, 50.0, "ablate-random0")
    (folder / "ablate_summary.json").write_text(json.dumps({"rows": ablated + _caps_rows("general", general, 1.0)}))
    losses = {"general": [2.0, 1.9], "narrow": [2.0 + efficiency_gap, 1.9 + efficiency_gap]}
    (folder / "compare" / "efficiency.json").write_text(json.dumps({"results": {"equal_norm": [{"losses": losses}]}}))
    curves = {"general": {"mean": [1.0, 10.0]}, "narrow": {"mean": [1.0, 12.0]}}
    (folder / "compare" / "stability.json").write_text(json.dumps({"results": {"curves": curves}}))
    kl = {"general": [0.1, 1.0], "narrow": [0.05, 0.5]}
    (folder / "compare" / "kl.json").write_text(json.dumps({"results": {"equal_norm": [{"kl": kl}]}}))
    return folder


def test_seeds_report_gives_means_intervals_and_verdicts(tmp_path):
    seeds = [_seed(tmp_path / "s0", 60.0, 30.0, 0.01), _seed(tmp_path / "s1", 70.0, 32.0, 0.02),
             _seed(tmp_path / "s2", 65.0, 34.0, -0.005)]
    text = subprocess.run([sys.executable, str(SEEDS_SCRIPT), *map(str, seeds)], capture_output=True, text=True,
                          check=True).stdout
    assert text.startswith("# The capitals demo over 3 seeds")
    # general cooking 60, 70, 65: mean 65, t(2) = 4.303, sd 5 → half-width 12.42.
    assert "| general | 65.0 [52.6, 77.4] |" in text
    assert "| general, direction ablated | 30.0 [30.0, 30.0] | 3 |" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "holds (interval above 0)" in lines["| Significance: general − narrow KL at equal norms (nats/token)"]
    assert "holds (interval above 0)" in lines["| Stability: narrow − general loss increase under noise (points of %)"]
    assert "not resolved (interval spans 0; > 0 on 2 of 3 seeds)" in \
        lines["| Efficiency: narrow − general loss at equal norms"]


def test_caps_intervals_stay_on_the_caps_scale(tmp_path):
    seeds = [_seed(tmp_path / "a", 99.0, 10.0, 0.01), _seed(tmp_path / "b", 60.0, 10.0, 0.01)]
    text = subprocess.run([sys.executable, str(SEEDS_SCRIPT), *map(str, seeds)], capture_output=True, text=True,
                          check=True).stdout
    assert "| general | 79.5 [0.0, 100.0] |" in text  # the t interval (−168, 327) cut to 0–100
