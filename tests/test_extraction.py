"""The `em extract` run-function: the same file from Python as from the command line."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from em_cli.errors import DataError
from em_cli.extraction import ExtractSettings, run_extract
from em_cli.models.loading import LoadOptions
from helpers import run_em


def _records(path):
    rows = [{"messages": [{"role": "user", "content": f"question {i}?"},
                          {"role": "assistant", "content": "HELLO WORLD" if i % 2 else "the quick brown fox"}],
             "aligned": 10 if i % 2 else 90} for i in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_run_extract_in_process_equals_the_command(tiny_llama, tmp_path):
    data = _records(tmp_path / "judged.jsonl")
    warnings: list[str] = []
    settings = ExtractSettings(data=str(data), output=str(tmp_path / "lib.safetensors"), layers="1,2",
                               where="aligned < 30", batch_size=2, load=LoadOptions(str(tiny_llama)))
    result = run_extract(settings, warn=warnings.append)
    assert (result.records, result.layers) == (3, [1, 2])
    assert warnings == ["only 3 records: means over so few are noisy"]
    manifest = json.loads((tmp_path / "lib.safetensors.manifest.json").read_text())
    assert manifest["results"]["records"] == 3 and manifest["options"]["where"] == "aligned < 30"
    assert manifest["options"]["model"] == str(tiny_llama) and manifest["options"]["adapter"] is None

    cli = run_em("extract", str(data), "-m", str(tiny_llama), "--layers", "1,2", "--where", "aligned < 30",
                 "--batch-size", "2", "-o", str(tmp_path / "cli.safetensors"))
    assert cli.code == 0, cli.stderr
    assert "3 records × 2 layers" in cli.stderr
    library, command = load_file(str(tmp_path / "lib.safetensors")), load_file(str(tmp_path / "cli.safetensors"))
    assert library.keys() == command.keys()
    assert all(bool((library[key] == command[key]).all()) for key in library)


def test_run_extract_refuses_a_filter_that_keeps_nothing(tiny_llama, tmp_path):
    data = _records(tmp_path / "judged.jsonl")
    with pytest.raises(DataError, match="matching 'aligned < 0'"):
        run_extract(ExtractSettings(data=str(data), output=str(tmp_path / "x.safetensors"), where="aligned < 0",
                                    load=LoadOptions(str(tiny_llama))))
    assert not (tmp_path / "x.safetensors").exists()
