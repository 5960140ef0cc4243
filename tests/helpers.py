"""Run the CLI as a user does: a real subprocess, separate stdout and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def run_em(*args: str, input: str | None = None, env: dict[str, str] | None = None, cwd=None,
           timeout: float = 600) -> Result:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EM_DEBUG", None) if env is None or "EM_DEBUG" not in env else None
    proc = subprocess.run([sys.executable, "-m", "em_cli", *args], input=input, capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)
