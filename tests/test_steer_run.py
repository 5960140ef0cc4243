"""`steering.run_steer`, the library call behind `em steer`, in-process on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from em_cli.artifacts.jsonl import read_jsonl
from em_cli.artifacts.tensors import TensorFile
from em_cli.responses import GenerateSettings
from em_cli.steering import SteerSettings, run_steer
from test_responses import StopAfter


@pytest.fixture
def settings(tiny_llama, tmp_path):
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: a\n  question: Hello\n- id: b\n  question: Cook rice\n")
    direction = tmp_path / "d.safetensors"
    vector = torch.randn(64, generator=torch.Generator().manual_seed(0))
    TensorFile(kind="direction", tensors={"layer.1": vector / vector.norm() * 20}, model_id="m",
               model_fingerprint="x", hidden_size=64, layers=[1]).save(direction)

    def make(output):
        run = GenerateSettings(questions=str(questions), model=str(tiny_llama), output=str(output),
                               max_new_tokens=4, batch_size=2, seed=1)
        return SteerSettings(generate=run, direction=[str(direction)], layers="1", scales=[4.0, 0.0])

    return make


def test_run_steer_writes_every_setting_and_the_manifest(settings, tmp_path):
    out = tmp_path / "s.jsonl"
    notes = []
    result = run_steer(settings(out), log=notes.append)
    records = read_jsonl(out)
    assert [r["id"] for r in records] == ["d@1x4|a/0/0", "d@1x4|b/0/0", "d@1x0|a/0/0", "d@1x0|b/0/0"]
    assert [r["response_id"] for r in records[:2]] == ["a/0/0", "b/0/0"] and records[2]["setting"] == "d@1x0"
    assert any(note.startswith("d@1x4: ‖scale·v‖ = 80.00") for note in notes)
    assert result.summary() == f"2 settings × 2 rows → {out}" and result.new_rows == 4
    manifest = json.loads((tmp_path / "s.jsonl.manifest.json").read_text())
    assert manifest["command"] == "steer" and manifest["results"] == json.loads(json.dumps(result.to_dict()))
    assert manifest["results"]["rows"] == 4 and len(manifest["results"]["settings"]) == 2


def test_interrupted_steer_resumes_to_the_same_file(settings, tmp_path):
    full, out = tmp_path / "full.jsonl", tmp_path / "out.jsonl"
    run_steer(settings(full))
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C once the first setting's rows are written
        run_steer(settings(out), progress=StopAfter(2))
    assert len((tmp_path / "out.jsonl.partial").read_text().splitlines()) == 2
    resumed = run_steer(settings(out))
    assert resumed.new_rows == 2
    # No row lost, none twice, the same text as an unbroken run.
    assert out.read_text() == full.read_text()
