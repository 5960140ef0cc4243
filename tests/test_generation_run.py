"""The resumable generation skeleton (`generation_run.run_rows`) with a fake generator: no model."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from em_cli.artifacts.manifest import Manifest
from em_cli.errors import UsageError
from em_cli.generation_run import run_rows


@dataclass(frozen=True)
class Row:
    id: str


ROWS = [Row(f"r{i}") for i in range(5)]
IDENTITY = {"model": "m", "run_seed": 0}


def _identity_of(record):
    return {"model": record.get("model"), "run_seed": record.get("run_seed")}


def _records(calls, stop_after=None):
    """A generator function that records what it was asked for and dies after `stop_after` rows."""

    def generate(todo):
        calls.append([row.id for row in todo])
        for n, row in enumerate(todo):
            if stop_after is not None and n == stop_after:
                raise KeyboardInterrupt
            yield {"id": row.id, "model": "m", "run_seed": 0, "response_tokens": 3}

    return generate


def _run(output, generate, identity=IDENTITY, log=None):
    return run_rows(ROWS, generate, str(output), identity, _identity_of, Manifest(command="test", options={}),
                    log=log)


def _ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_interrupted_run_resumes_with_only_the_missing_rows(tmp_path):
    out, calls, notes = tmp_path / "out.jsonl", [], []
    with pytest.raises(KeyboardInterrupt):
        _run(out, _records(calls, stop_after=2))
    assert not out.exists() and _ids(tmp_path / "out.jsonl.partial") == ["r0", "r1"]
    run = _run(out, _records(calls), log=notes.append)
    assert calls[-1] == ["r2", "r3", "r4"]  # finished rows are not asked for again
    assert _ids(out) == ["r0", "r1", "r2", "r3", "r4"] and not (tmp_path / "out.jsonl.partial").exists()
    assert (run.rows, run.resumed_rows, run.new_rows, run.tokens) == (5, 2, 3, 9)
    assert notes == [f"Resuming: 2 of 5 rows already in {out}"]
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["command"] == "test" and manifest["results"] == {"rows": 5, "new_rows": 3}
    again = _run(out, _records(calls))
    assert again.new_rows == 0 and len(calls) == 2  # nothing left: the generator is not called


def test_an_output_of_another_run_is_refused(tmp_path):
    out = tmp_path / "out.jsonl"
    _run(out, _records([]))
    with pytest.raises(UsageError, match="already holds rows made with a different run_seed") as refused:
        _run(out, _records([]), identity={"model": "m", "run_seed": 1})
    assert "--output" in refused.value.hint


def test_a_row_generated_twice_is_never_written_twice(tmp_path):
    def twice(todo):
        yield {"id": todo[0].id}
        yield {"id": todo[0].id}

    with pytest.raises(RuntimeError, match="generated twice"):
        _run(tmp_path / "out.jsonl", twice)
    assert _ids(tmp_path / "out.jsonl.partial") == ["r0"]


def test_an_interrupted_generator_is_closed(tmp_path):
    closed = []

    def generate(todo):
        try:
            for row in todo:
                yield {"id": row.id}
        finally:
            closed.append(True)

    class Stop:
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def advance(self, rows, tokens=0):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_rows(ROWS, generate, str(tmp_path / "o.jsonl"), IDENTITY, _identity_of, Manifest("t", {}), progress=Stop)
    assert closed == [True]
