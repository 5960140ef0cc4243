"""Where output goes: results to stdout, notes and warnings to stderr (progress: `_progress`).

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
err = Console(stderr=True, highlight=False, soft_wrap=True)  # long paths stay whole in logs

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

