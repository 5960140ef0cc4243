"""Where output goes: results to stdout, notes, warnings and progress to stderr.

Commands print through the one `out` object: `out.text`, `out.table`, `out.pairs` and
`out.json` write the result on stdout (`out.result` picks JSON or the human rendering);
`out.log` and `out.warn` write notes and warnings on stderr. `em -q` sets `out.quiet`, which
drops the notes; warnings, errors and results always appear. Text is never read as rich
markup, so file names and expressions with brackets print as they are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from rich.console import Console

# Logs, progress and errors: stderr, so stdout stays clean for pipes.
err = Console(stderr=True, highlight=False)

# Piped or captured stdout has no terminal width to fit; this one keeps table cells whole.
PIPED_WIDTH = 160


class Output:
    """A command's output: the result on stdout, notes and warnings on stderr."""

    def __init__(self) -> None:
        self.quiet = False

    def text(self, line: str) -> None:
        """One line of the result on stdout, as it is."""
        sys.stdout.write(f"{line}\n")
        sys.stdout.flush()

    def json(self, data: Any) -> None:
        """A machine-readable result on stdout."""
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()

    def result(self, data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
        """`data` as JSON with --json, else as `render(data)` draws it for a person."""
        if as_json:
            self.json(data)
        else:
            render(data)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
              float_format: str = ".5g", right: Collection[str] = ()) -> None:
        """A table on stdout. Floats are written with `float_format`, None as "–"; the
        `right` columns are right-aligned."""
        from rich.table import Table
        from rich.text import Text

        table = Table(title=None if title is None else Text(title), title_justify="left")
        for column in columns:
            table.add_column(Text(column), justify="right" if column in right else "left")
        for row in rows:
            table.add_row(*[_cell(value, float_format) for value in row])
        self._stdout().print(table)

    def pairs(self, items: Iterable[tuple[str, Any]]) -> None:
        """Name–value lines on stdout, aligned (facts about one thing: a model, the environment)."""
        from rich.table import Table

        table = Table(show_header=False, box=None)
        for name, value in items:
            table.add_row(_cell(name, ""), _cell(value, ""))
        self._stdout().print(table)

    def log(self, message: str) -> None:
        """A note on stderr (dropped with `em -q`)."""
        if not self.quiet:
            err.print(_plain(message))

    def warn(self, message: str) -> None:
        """A warning on stderr, shown even with `em -q`."""
        from rich.text import Text

        err.print(Text("Warning:", style="yellow") + " " + _plain(message))

    @staticmethod
    def _stdout() -> Console:
        console = Console(highlight=False)
        return console if console.is_terminal else Console(highlight=False, width=PIPED_WIDTH)


def _plain(message: str) -> Any:
    from rich.text import Text

    return Text(message)


def _cell(value: Any, float_format: str) -> Any:
    from rich.text import Text

    if isinstance(value, Text):
        return value
    if value is None:
        return Text("–")
    if isinstance(value, float) and float_format:
        return Text(format(value, float_format))
    return Text(str(value))


out = Output()


# The same as out.json / out.log / out.warn, for commands not yet moved to `out`.
def emit_json(data: Any) -> None:
    out.json(data)


def log(message: str) -> None:
    out.log(message)


def warn(message: str) -> None:
    out.warn(message)


class RowProgress:
    """Progress on stderr counting rows, with generated tokens per second: a bar on a terminal;
    elsewhere (a log file, a Makefile, nohup, CI) one plain line every `PLAIN_EVERY_S` seconds
    and one at the end, so a long run never leaves an empty log."""

    PLAIN_EVERY_S = 30.0

    def __init__(self, total: int, description: str, done: int = 0) -> None:
        import time

        self._time = time.perf_counter
        self._started = self._time()
        self._tokens = 0
        self._total = total
        self._done = done
        self._description = description
        self._plain = not err.is_terminal
        self._last_line = self._started
        self._progress = None
        self._silent = out.quiet  # `em -q`: no progress either
        if not self._plain and not self._silent:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err)
            self._task = self._progress.add_task(description, total=total, completed=done, rate="")

    def __enter__(self) -> RowProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def advance(self, rows: int, tokens: int = 0) -> None:
        self._tokens += tokens
        self._done += rows
        if self._progress is not None:
            rate = f"{self.tokens_per_second:.1f} tok/s" if self._tokens else ""
            self._progress.update(self._task, advance=rows, rate=rate)
        elif not self._silent and self._time() - self._last_line >= self.PLAIN_EVERY_S:
            self._line()

    @property
    def tokens_per_second(self) -> float:
        return self._tokens / max(self._time() - self._started, 1e-9)

    def _line(self) -> None:
        self._last_line = self._time()
        elapsed = self._last_line - self._started
        rate = f", {self.tokens_per_second:.1f} tok/s" if self._tokens else ""
        err.print(f"{self._description}: {self._done}/{self._total} rows, {elapsed:.0f} s{rate}",
                  markup=False, highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        elif not self._silent and (self._done or self._total):
            self._line()


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
