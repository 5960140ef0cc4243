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


class RowProgress:
    """A progress bar on stderr counting rows, with generated tokens per second."""

    def __init__(self, total: int, description: str, done: int = 0) -> None:
        import time

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._time = time.perf_counter
        self._started = self._time()
        self._tokens = 0
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err)
        self._task = self._progress.add_task(description, total=total, completed=done, rate="")

    def __enter__(self) -> RowProgress:
        self._progress.start()
        return self

    def advance(self, rows: int, tokens: int = 0) -> None:
        self._tokens += tokens
        elapsed = max(self._time() - self._started, 1e-9)
        rate = f"{self._tokens / elapsed:.1f} tok/s" if self._tokens else ""
        self._progress.update(self._task, advance=rows, rate=rate)

    @property
    def tokens_per_second(self) -> float:
        return self._tokens / max(self._time() - self._started, 1e-9)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
