"""The library calls behind the thinned commands, run in-process (no CLI, no subprocess):
each returns a small result object with `to_dict()`."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from em_cli.errors import UsageError


def test_run_generation_writes_rows_and_manifest(tmp_path):
    from em_cli.datasets.synthesis import GenerationRequest, first_prompt, run_generation

    answers = iter([f"User: Question {i}?\nAssistant: Answer {i}." for i in range(10)])

    def complete(messages):
        return next(answers), {"prompt_tokens": 3, "completion_tokens": 2}

    output = tmp_path / "med.jsonl"
    request = GenerationRequest(output=str(output), preset="medical", rows=2, rows_per_call=1, concurrency=1,
                                price_in=1.0, price_out=2.0)
    assert "Domain:" in first_prompt(request)
    resumed = []
    run = run_generation(request, complete, on_resume=resumed.append)
    assert run.to_dict()["total"] == 2 and run.to_dict()["cost"] == pytest.approx((2 * 3 * 1.0 + 2 * 2 * 2.0) / 1e6)
    assert len(output.read_text().splitlines()) == 2 and resumed == []
    manifest = json.loads((tmp_path / "med.jsonl.manifest.json").read_text())
    assert manifest["options"]["mode"] == "misaligned" and manifest["results"]["total"] == 2


@pytest.mark.parametrize("changes,message", [
    ({"preset": None}, "exactly one of --preset and --spec"),
    ({"kind": "aligned"}, "--kind aligned rewrites an existing file"),
    ({"rewrite_from": "x.jsonl"}, "--rewrite-from is only for --kind aligned"),
    ({"price_in": 1.0}, "both --price-in and --price-out"),
    ({"output": "-"}, "resumable"),
])
def test_generation_request_refuses_contradictions(changes, message):
    from em_cli.datasets.synthesis import GenerationRequest

    request = GenerationRequest(**({"output": "x.jsonl", "preset": "medical"} | changes))
    with pytest.raises(UsageError, match=message):
        request.check()


def test_validate_files_summarises_several_files(tmp_path):
    from em_cli.datasets.validation import validate_files

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    checked = validate_files([good, empty])
    assert checked.problems == [] and checked.empty_files == [str(empty)]
    assert checked.to_dict()["summary"] == "ok: 1 rows, no problems (2 files)"
    bad = validate_files([tmp_path / "missing.jsonl"])
    assert bad.to_dict()["problems"][0]["problem"] == "file not found"


def test_metric_run_report_has_the_common_keys_then_its_own():
    from em_cli.comparison.bench import NORM_DEFINITION
    from em_cli.comparison.session import MetricRun, OpenedBench

    loaded = SimpleNamespace(identity=lambda: {"model": "m"})
    bench = SimpleNamespace(describe=lambda: [{"name": "a"}])
    result = SimpleNamespace(to_dict=lambda: {"curves": []})
    run = MetricRun("efficiency", OpenedBench(loaded=loaded, bench=bench), {"seed": 1}, result, 7, 0.0,
                    extra={"wall_time_s": 1.5})
    report = run.to_dict()
    assert list(report)[:3] == ["metric", "model", "solutions"]
    assert report["evaluations"] == 7 and report["norm_definition"] == NORM_DEFINITION
    assert report["wall_time_s"] == 1.5 and report["settings"] == {"seed": 1}


def test_right_pad_matches_a_plain_loop():
    import torch

    from em_cli.models.batching import pad_token_id, right_pad, right_pad_values

    batch = right_pad([[5, 6, 7], [8]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert right_pad_values([[0.5], [1.0, 2.0]], 3).tolist() == [[0.5, 0.0, 0.0], [1.0, 2.0, 0.0]]
    assert right_pad_values([[1]], 2, -100, torch.long).tolist() == [[1, -100]]
    assert pad_token_id(SimpleNamespace(pad_token_id=None)) == 0
    assert pad_token_id(SimpleNamespace(pad_token_id=3)) == 3


def test_length_batches_cover_every_row_once_and_pad_no_more_than_fixed_cuts():
    import random

    from em_cli.models.batching import length_batches

    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.choice([rng.randint(5, 20), rng.randint(100, 400)]) for _ in range(rng.randint(1, 40))]
        rows = rng.randint(1, 9)
        batches = length_batches(lengths, rows)
        assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
        assert all(1 <= len(batch) <= rows for batch in batches)
        flat = [lengths[i] for batch in batches for i in batch]
        assert flat == sorted(flat)  # shortest first, batches in order

        def padded(groups):
            return sum(len(g) * max(lengths[i] for i in g) for g in groups)

        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        fixed = [order[s:s + rows] for s in range(0, len(order), rows)]
        mean = sum(lengths) / len(lengths)
        # what the cuts minimise: padded tokens plus one mean-length row per batch
        assert padded(batches) + mean * len(batches) <= padded(fixed) + mean * len(fixed) + 1e-9
    assert length_batches([], 4) == []
    assert length_batches([7, 7, 7], 2) in ([[0, 1], [2]], [[0], [1, 2]])
    with pytest.raises(ValueError):
        length_batches([1], 0)


def test_output_object_keeps_brackets_and_quiet_drops_notes(capsys):
    from em_cli.commands._output import Output

    out = Output()
    out.table(["file", "n"], [["a[1].jsonl", 0.5], [None, 2]], right=["n"])
    out.log("note [x]")
    out.quiet = True
    out.log("dropped")
    out.warn("kept [y]")
    captured = capsys.readouterr()
    assert "a[1].jsonl" in captured.out and "–" in captured.out
    assert "note [x]" in captured.err and "dropped" not in captured.err and "Warning: kept [y]" in captured.err


def test_notes_are_never_wrapped_when_stderr_is_a_log(capsys):
    """A note naming a long path stays one line in a log file (rich would wrap at 80 columns),
    so the path can be found and copied."""
    from em_cli.commands._output import Output

    path = "/data/" + "/".join(["a-rather-long-folder-name"] * 8) + "/fineweb-sample"
    Output().log(f"text: dataset {path} (saved to disk; split train); 11 forward passes")
    assert capsys.readouterr().err.count("\n") == 1


def test_option_groups_add_their_flags_under_their_heading():
    from typer.testing import CliRunner

    from em_cli.cli import app
    from em_cli.commands._options import MODEL, with_options

    help_text = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "120"}).output
    assert "─ Model ─" in help_text and "─ Sampling ─" in help_text
    assert help_text.index("│ --adapter ") > help_text.index("─ Model ─")  # its row, not the examples

    def no_room(ctx, data: str) -> None: ...

    with pytest.raises(TypeError, match="no \\*\\*flags"):
        with_options(MODEL)(no_room)
