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


class TrainingProgress:
    """Training progress on stderr: a bar with the latest losses on a terminal, else one plain
    line per log entry (for runs watched through a log file). Nothing appears until training
    starts, so input errors found while loading are not preceded by an empty bar."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._plain = not err.is_terminal
        self._last_logs: dict[str, float] | None = None
        self._started = 0.0

    def __enter__(self) -> TrainingProgress:
        return self

    def update(self, step: int, total: int, logs: dict[str, float]) -> None:
        import time

        info = " ".join(f"{label} {logs[key]:.4f}" for key, label in
                        (("sft_loss", "loss"), ("kl_loss", "kl"), ("eval_loss", "eval loss")) if key in logs)
        if self._plain:
            if not self._started:
                self._started = time.perf_counter()
                err.print(f"training: {total} steps")
            if info and logs is not self._last_logs:  # a new loss entry, not a repeat of the last one
                self._last_logs = logs
                elapsed = time.perf_counter() - self._started
                err.print(f"step {step}/{total} {info} ({elapsed:.0f}s)".replace("  ", " "))
            return
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=err)
            self._task = self._progress.add_task("train", total=total or None, info="")
            self._progress.start()
        self._progress.update(self._task, completed=step, total=total or None, info=info)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
