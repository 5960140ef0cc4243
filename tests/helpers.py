"""Run the CLI as a user does: a real subprocess, separate stdout and stderr."""

from __future__ import annotations

import os
from pathlib import Path
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


REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A third-party research file from `shared/data` beside the repository (read in place,
    never copied). Missing in CI is a failure, not a skip: these tests prove compatibility."""
    import pytest

    path = SHARED_DATA / name
    if not path.exists():
        message = f"{path} is missing: the compatibility tests read the research files from ../shared/data"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def send_json(handler, status: int, payload: dict) -> None:
    """Answer an http.server request with a JSON body (for the fake servers in tests)."""
    from em_cli.serving import send_json as send

    send(handler, status, payload)


def kill_when_partial_has(proc, partial: Path, lines: int, timeout: float = 120) -> None:
    """SIGKILL `proc` once its `OUTPUT.partial` holds `lines` complete lines (a crash mid-run)."""
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and (not partial.exists() or partial.read_text().count("\n") < lines):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
