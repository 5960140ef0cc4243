"""A resumable generation run: planned rows → one JSONL output that a killed run continues.

`run_rows` is the workflow `em generate` and `em steer` share. It reads what an earlier run
left in the output (its complete lines, see `ResumableJsonl`), refuses that output when it
was made with other settings, generates only the rows not in it yet, appends each record as
it arrives (so a kill -9 loses no written row and a re-run repeats none), moves the finished
file onto its final name and writes the manifest beside it.

    run = run_rows(rows, lambda todo: generate_responses(loaded, todo, ...), "out.jsonl",
                   identity={"model": "m", ...}, identity_of=lambda record: {...},
                   manifest=Manifest(command="generate", options={}))
    run.new_rows, run.resumed_rows
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from em_cli.artifacts.manifest import Manifest


class PlannedRow(Protocol):
    """A row to generate: anything with a stable `id` (the record's `id` once generated)."""

    @property
    def id(self) -> str: ...


class Progress(Protocol):
    """What `run_rows` reports progress to (e.g. `commands._progress.RowProgress`)."""

    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc: object) -> None: ...

    def advance(self, rows: int, tokens: int = 0) -> None: ...


# Progress(total rows, description, rows already done)
ProgressFactory = Callable[[int, str, int], Progress]

Row = TypeVar("Row", bound=PlannedRow)


@dataclass
class RowsRun:
    """What one run did to its output: `rows` planned, `resumed_rows` an earlier run had
    written, `new_rows` written now with `tokens` generated in `seconds`."""

    output: str
    rows: int
    resumed_rows: int
    new_rows: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def check_same_run(existing: Iterable[dict[str, Any]], identity: Mapping[str, Any],
                   identity_of: Callable[[dict[str, Any]], Mapping[str, Any]], output: str) -> None:
    """Refuse to add rows to an output whose records (`identity_of(record)`) differ from
    `identity` in any key: a resumed file must read as one run."""
    from em_cli.errors import UsageError

    for record in existing:
        had = identity_of(record)
        changed = [key for key in identity if had.get(key) != identity[key]]
        if changed:
            raise UsageError(f"{output} already holds rows made with a different {', '.join(changed)}",
                             hint="use another --output, or the same options to resume")


def run_rows(rows: Sequence[Row], generate: Callable[[list[Row]], Iterable[dict[str, Any]]], output: str,
             identity: Mapping[str, Any], identity_of: Callable[[dict[str, Any]], Mapping[str, Any]],
             manifest: Manifest, results: Callable[[RowsRun], dict[str, Any]] | None = None,
             prepare: Callable[[], None] | None = None, log: Callable[[str], None] | None = None,
             progress: ProgressFactory | None = None, description: str = "generating") -> RowsRun:
    """Generate the `rows` not yet in `output` (`-`: stdout, nothing to resume) and write them.

    `generate(todo)` yields one record per row of `todo`, in any order, each with the row's
    `id`; its `response_tokens` count towards the token rate. `identity` is what every record
    of the output must share (compared with `identity_of(record)` for the records already
    there). `prepare()` runs only when there is something to generate (e.g. loading a model).
    `results(run)` fills the manifest's results; `log` hears the resume note and `progress`
    (total, description, done) shows rows as they are written.
    """
    from em_cli.artifacts.jsonl import ResumableJsonl

    sink = ResumableJsonl(output)
    check_same_run(sink.existing, identity, identity_of, output)
    written = {record.get("id") for record in sink.existing}
    todo = [row for row in rows if row.id not in written]
    run = RowsRun(output=output, rows=len(rows), resumed_rows=len(rows) - len(todo))
    if sink.existing and log is not None:
        log(f"Resuming: {run.resumed_rows} of {run.rows} rows already in {output}")
    if todo and prepare is not None:
        prepare()
    shown = (progress or NoProgress)(run.rows, description, run.resumed_rows)
    started = time.perf_counter()
    records = generate(todo) if todo else iter(())
    try:
        with sink, shown:
            for record in records:
                if record["id"] in written:  # a generator bug; appending would duplicate a row
                    raise RuntimeError(f"row {record['id']} was generated twice")
                written.add(record["id"])
                sink.append(record)
                tokens = int(record.get("response_tokens") or 0)
                run.new_rows += 1
                run.tokens += tokens
                shown.advance(1, tokens)
            sink.finish()
    finally:
        # An interrupted generator is closed now, not whenever it is collected: its scopes
        # (steering hooks on the model, a pool of requests) end with the run.
        close = getattr(records, "close", None)
        if close is not None:
            close()
    run.seconds = time.perf_counter() - started
    manifest.results = results(run) if results is not None else {"rows": run.rows, "new_rows": run.new_rows}
    manifest.write_beside(output)
    return run


class NoProgress:
    """A Progress that shows nothing (for library callers that pass no progress)."""

    def __init__(self, total: int, description: str, done: int = 0) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def advance(self, rows: int, tokens: int = 0) -> None:
        pass
