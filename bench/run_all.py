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


# (benchmark, measure, comparison, target, what it means): the goals the issues set, each
# checked against the number measured in this run.
TARGETS = [
    ("finetune", "em_vs_trl_throughput", ">=", 1.5, "em tokens/s ÷ TRL SFTTrainer+PEFT tokens/s"),
    ("finetune", "em_vs_trl_peak_rss", "<=", 1.0, "em peak RSS ÷ TRL peak RSS"),
    ("finetune", "kl_vs_sft_same_rows_step_time_ratio", "<=", 1.35,
     "KL step time ÷ an SFT step over the same SFT + KL rows"),
    ("finetune", "kl_vs_sft_same_rows_peak_rss_ratio", "<=", 1.2,
     "KL step peak RSS ÷ an SFT step over the same SFT + KL rows"),
    ("judge", "c32_efficiency_vs_ideal", ">=", 0.85, "ideal wall time ÷ measured, concurrency 32"),
    ("judge", "c64_efficiency_vs_ideal", ">=", 0.85, "ideal wall time ÷ measured, concurrency 64"),
    ("judge", "cached_requests", "<=", 1, "requests made by a fully cached re-run (the probe)"),
    ("extract", "speedup_vs_authors", ">=", 4.0, "all-layer hidden states at batch 1 ÷ em extract"),
    ("steer", "hook_overhead", "<=", 0.05, "steered ÷ plain generation time − 1"),
]


def verdicts(results: dict) -> list[str]:
    lines = ["| benchmark | measure | target | measured | verdict |", "|---|---|---|---|---|"]
    for bench, key, op, goal, meaning in TARGETS:
        value = results.get(bench, {}).get(key)
        if not isinstance(value, (int, float)):
            verdict, shown = "not measured", results.get(bench, {}).get("error", "–")
        else:
            met = value >= goal if op == ">=" else value <= goal
            verdict, shown = ("met" if met else "missed"), value
        lines.append(f"| {bench} | {key} ({meaning}) | {op} {goal} | {shown} | {verdict} |")
    return lines


def bounds(results: dict) -> list[str]:
    """What bounds the finetune and extraction targets, from this run's own numbers."""
    tune = results.get("finetune", {})
    lines = []
    floor, kl = tune.get("kl_vs_sft_same_rows_matmul_floor"), tune.get("kl_vs_sft_same_rows_step_time_ratio")
    if isinstance(floor, (int, float)) and isinstance(kl, (int, float)):
        lines.append(f"- KL step ÷ SFT step over the same rows, counting matmul FLOPs only: {floor} for this data "
                     f"(bench/finetune.py `kl_matmul_floor`); measured {kl}, {kl / floor:.2f}× that floor.")
    trl, em = tune.get("trl_fraction_of_flop_limit"), tune.get("em_fraction_of_flop_limit")
    if isinstance(trl, (int, float)) and isinstance(em, (int, float)):
        lines.append(f"- Throughput: em runs at {em:.0%} of this machine's fp32 matmul rate, TRL at {trl:.0%}; "
                     f"1.5× TRL would need em at {1.5 * trl:.0%}.")
        large, shaped = tune.get("matmul_fp32_gflops"), tune.get("matmul_fp32_gflops_at_model_shapes")
        if isinstance(large, (int, float)) and isinstance(shaped, (int, float)) and large:
            lines.append(f"- At the shapes a decoder layer multiplies for one batch ({tune.get('batch_tokens')} "
                         f"tokens) this machine "
                         f"does {shaped} GFLOP/s ({shaped / large:.0%} of the large-matrix {large}): em's useful "
                         f"FLOPs are {em * large / shaped:.0%} of that rate, and 1.5× TRL would need "
                         f"{1.5 * trl * large / shaped:.0%}.")
    extract = results.get("extract", {})
    flops, speedup = extract.get("matmul_flop_ratio"), extract.get("speedup_vs_authors")
    if isinstance(flops, (int, float)) and isinstance(speedup, (int, float)):
        lines.append(f"- Extraction at layer {extract.get('layer')}: the authors' path does {flops}× em's matmul "
                     f"FLOPs (every layer and the output head against the layers up to the chosen one), so "
                     f"stopping early gives {flops}× at equal matmul rates; the measured {speedup}× means em's "
                     f"batched path runs at {speedup / flops:.2f}× the authors' rate per FLOP.")
    return ["## What bounds the targets", "", *lines, ""] if lines else []


def main() -> None:
    results = {"help": help_startup(), "steer": run_script("steer.py"), "judge": run_script("judge.py"),
               "extract": run_script("extract.py"), "finetune": run_script("finetune.py", "--repeats", "3")}
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, {platform.platform()}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"# Benchmark results ({date.today().isoformat()})", "", f"Machine: {machine}; load average "
             f"{load:.1f} when the run ended.", "",
             "Every ratio compares two runs made in the same invocation on the same machine. Written by "
             "`make bench` (bench/run_all.py); nothing here is edited by hand.", "", "## Targets", "",
             *verdicts(results), "", *bounds(results), "## Every number", "",
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
