"""Where output goes: results to stdout, progress and logs to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Logs, progress and errors: stderr, so stdout stays clean for pipes.
err = Console(stderr=True, highlight=False)


def emit_json(data: Any) -> None:
    """A machine-readable result on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def log(message: str) -> None:
    err.print(message)


def warn(message: str) -> None:
    err.print(f"[yellow]Warning:[/yellow] {message}")
