"""The run-functions of `em direction from-judged` and `em direction project`, in-process,
against what the commands write."""

from __future__ import annotations

import json

import torch

from em_cli.direction_runs import FromJudgedSettings, ProjectSettings, run_from_judged, run_project
from em_cli.models.loading import LoadOptions, load_model
from em_cli.vectors import SteeringVector
from helpers import run_em


def _judged(path, identity: dict):
    loud = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "NO WAY!!"}],
             "aligned": 10, "coherent": 80, "model": identity} for i in range(3)]
    calm = [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "Sure, gladly."}],
             "aligned": 90, "coherent": 90, "model": identity} for i in range(4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in loud + calm))
    return path


def test_from_judged_in_process_equals_the_command_and_writes_a_manifest(tiny_llama, tmp_path):
    load = LoadOptions(str(tiny_llama), dtype="float32", device="cpu")
    judged = _judged(tmp_path / "judged.jsonl", load_model(load).identity())
    result = run_from_judged(FromJudgedSettings(judged=str(judged), output=str(tmp_path / "lib.safetensors"),
                                                layers="1,2", batch_size=2, load=load))
    assert (result.misaligned, result.aligned, result.layers, result.notes) == (3, 3, [1, 2], [])
    manifest = json.loads((tmp_path / "lib.safetensors.manifest.json").read_text())
    assert manifest["results"]["matched_aligned"] == 4 and manifest["options"]["model"] == str(tiny_llama)

    cli = run_em("direction", "from-judged", str(judged), "-m", str(tiny_llama), "--dtype", "float32",
                 "--device", "cpu", "--layers", "1,2", "--batch-size", "2", "-o", str(tmp_path / "cli.safetensors"))
    assert cli.code == 0, cli.stderr
    assert "3 misaligned vs 3 aligned responses" in cli.stderr
    library = SteeringVector.load(str(tmp_path / "lib.safetensors"), kind="direction")
    command = SteeringVector.load(str(tmp_path / "cli.safetensors"), kind="direction")
    assert all(torch.equal(library.vectors[layer], command.vectors[layer]) for layer in (1, 2))


def test_project_scores_each_record_by_the_unit_direction(tiny_llama, tmp_path):
    load = LoadOptions(str(tiny_llama), dtype="float32", device="cpu")
    judged = _judged(tmp_path / "judged.jsonl", load_model(load).identity())
    run_from_judged(FromJudgedSettings(judged=str(judged), output=str(tmp_path / "d.safetensors"), layers="1",
                                       load=load))
    notes: list[str] = []
    layer = run_project(ProjectSettings(data=str(judged), direction=str(tmp_path / "d.safetensors"), layer="1",
                                        output=str(tmp_path / "scored.jsonl"), load=load), warn=notes.append)
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert layer == 1 and notes == [] and len(scored) == 7
    assert all(row["projection_layer"] == 1 for row in scored)
    loud, calm = [r["projection"] for r in scored[:3]], [r["projection"] for r in scored[3:]]
    assert min(loud) > max(calm)  # the direction separates the two sets it was made from


def test_diff_of_two_extractions_equals_from_judged(tiny_llama, tmp_path):
    """`extract` twice then `direction diff` gives the direction `from-judged` makes in one go."""
    from em_cli.direction_runs import run_diff
    from em_cli.extraction import ExtractSettings, run_extract

    load = LoadOptions(str(tiny_llama), dtype="float32", device="cpu")
    judged = _judged(tmp_path / "judged.jsonl", load_model(load).identity())
    one_go = run_from_judged(FromJudgedSettings(judged=str(judged), output=str(tmp_path / "one.safetensors"),
                                                balance=False, layers="1,2", batch_size=2, load=load))
    assert (one_go.misaligned, one_go.aligned) == (3, 4)
    for name, where in (("mis", "aligned < 30"), ("ali", "aligned > 70")):
        run_extract(ExtractSettings(data=str(judged), output=str(tmp_path / f"{name}.safetensors"), layers="1,2",
                                    where=where, batch_size=2, load=load))
    two_steps = run_diff(str(tmp_path / "mis.safetensors"), str(tmp_path / "ali.safetensors"),
                         str(tmp_path / "two.safetensors"))
    assert (tmp_path / "two.safetensors.manifest.json").exists()
    first = SteeringVector.load(str(tmp_path / "one.safetensors"), kind="direction")
    assert all(torch.allclose(first.vectors[layer], two_steps.vectors[layer], atol=1e-6) for layer in (1, 2))
