"""Progress on stderr for long work: a bar on a terminal, plain periodic lines elsewhere (log
files, Makefiles, nohup, CI), nothing with `em -q`."""

from __future__ import annotations

from typing import Any

from em_cli.commands._output import err, out


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
