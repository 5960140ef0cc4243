"""The prepared GPU check (bench/gpu_check.py) lists every check without a GPU, and refuses to
'pass' on a machine without one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
EXPECTED = ["cuda_tests", "qlora_4bit", "bf16_lora", "adamw_8bit", "kl_lora", "vector_bf16",
            "full_fp32_master", "steer_extract_cuda_vs_cpu"]


def test_dry_run_lists_every_check():
    result = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == EXPECTED


def test_without_a_gpu_it_fails_rather_than_passing():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real check is `make gpu-check`")
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 1 and "no CUDA device" in result.stderr
