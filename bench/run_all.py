"""Run every benchmark and write bench/RESULTS.md (by hand: `make bench`).

Each benchmark prints ratios against a baseline measured in the same run; this script adds
`em --help` start-up time and describes the machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_script(name: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(HERE / name), *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    text = proc.stdout
    return json.loads(text[text.index("{"):])


def help_startup(repeats: int = 5) -> dict:
    em = [sys.executable, "-m", "em_cli", "--help"]
    python = [sys.executable, "-c", "pass"]
    def best(cmd):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return min(times)
    em_s, py_s = best(em), best(python)
    return {"em_help_s": round(em_s, 3), "python_startup_s": round(py_s, 3), "ratio_vs_bare_python": round(em_s / py_s, 2)}


def main() -> None:
    results = {"help": help_startup(), "steer": run_script("steer.py"), "judge": run_script("judge.py"),
               "finetune": run_script("finetune.py")}
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, {platform.platform()}"
    lines = [f"# Benchmark results ({date.today().isoformat()})", "", f"Machine: {machine}.", "",
             "Every ratio compares two runs made in the same invocation on the same machine.", "",
             "| benchmark | measure | value |", "|---|---|---|"]
    for name, data in results.items():
        for key, value in data.items():
            if isinstance(value, (int, float, str)) and key not in ("benchmark",):
                lines.append(f"| {name} | {key} | {value} |")
    lines += ["", "Raw results:", "", "```json", json.dumps(results, indent=2), "```", ""]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
