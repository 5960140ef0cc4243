"""`responses.run_generate`, the library call behind `em generate`, in-process on a tiny model."""

from __future__ import annotations

import json

import pytest

from em_cli.artifacts.jsonl import read_jsonl
from em_cli.responses import GenerateSettings, run_generate

QUESTIONS = """\
- id: rice
  paraphrases: ["How do I cook rice?", "Rice: how?"]
- id: paris
  question: What is the capital of France?
  samples_per_paraphrase: 2
"""


class StopAfter:
    """A progress display that presses Ctrl-C once `rows` rows have been written."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __call__(self, total: int, description: str, done: int) -> StopAfter:
        return self

    def __enter__(self) -> StopAfter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.rows -= rows
        if self.rows <= 0:
            raise KeyboardInterrupt


@pytest.fixture
def settings(tiny_llama, tmp_path):
    questions = tmp_path / "q.yaml"
    questions.write_text(QUESTIONS)
    return lambda output: GenerateSettings(questions=str(questions), model=str(tiny_llama), output=str(output),
                                           max_new_tokens=5, batch_size=2, seed=3)


def test_run_generate_writes_rows_and_manifest(settings, tmp_path):
    out = tmp_path / "r.jsonl"
    result = run_generate(settings(out))
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["rice/0/0", "rice/1/0", "paris/0/0", "paris/0/1"]
    assert rows[0]["run_seed"] == 3 and rows[0]["sampling"]["max_new_tokens"] == 5
    assert result.to_dict()["rows"] == 4 and result.new_rows == 4 and result.model["model"] == rows[0]["model"]["model"]
    assert result.server is None and result.summary() == f"4 new responses, 4 in total → {out}"
    manifest = json.loads((tmp_path / "r.jsonl.manifest.json").read_text())
    assert manifest["command"] == "generate" and manifest["results"]["new_rows"] == 4
    assert manifest["options"]["batch_size"] == 2 and manifest["options"]["questions"].endswith("q.yaml")


def test_interrupted_generate_resumes_to_the_same_file(settings, tmp_path):
    full, out = tmp_path / "full.jsonl", tmp_path / "out.jsonl"
    run_generate(settings(full))
    with pytest.raises(KeyboardInterrupt):
        run_generate(settings(out), progress=StopAfter(2))
    assert not out.exists() and len((tmp_path / "out.jsonl.partial").read_text().splitlines()) == 2
    notes = []
    resumed = run_generate(settings(out), log=notes.append)
    assert resumed.new_rows == 2 and notes[0] == f"Resuming: 2 of 4 rows already in {out}"
    assert out.read_text() == full.read_text()  # no row lost, none twice, the same text
    again = run_generate(settings(out))
    assert again.new_rows == 0 and again.model is None  # nothing to do: no model loaded
    assert out.read_text() == full.read_text()
