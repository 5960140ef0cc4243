"""The demo's over-seeds report (examples/demo/seeds.py), run as `make demo-seeds` runs it, on
seed folders written here in the shape the `em` commands write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "demo" / "seeds.py"


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
    text = subprocess.run([sys.executable, str(SCRIPT), *map(str, seeds)], capture_output=True, text=True,
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
    text = subprocess.run([sys.executable, str(SCRIPT), *map(str, seeds)], capture_output=True, text=True,
                          check=True).stdout
    assert "| general | 79.5 [0.0, 100.0] |" in text  # the t interval (−168, 327) cut to 0–100
