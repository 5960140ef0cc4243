"""The CLI shell as a user meets it: help, version, exit codes, error lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import run_em

SUITE = ["dataset", "generate", "finetune", "extract", "direction", "steer", "judge", "compare"]


def test_help_lists_every_subcommand():
    result = run_em("--help")
    assert result.code == 0
    for name in SUITE + ["info", "model"]:
        assert f" {name} " in result.stdout, name


def test_help_path_imports_no_torch_or_transformers():
    code = ("import sys; import em_cli.cli; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version():
    result = run_em("--version")
    assert result.code == 0
    assert result.stdout.startswith("em ")


@pytest.mark.parametrize("name", SUITE)
def test_every_suite_command_has_help_with_an_example(name):
    result = run_em(name, "--help", env={"COLUMNS": "200"})
    assert result.code == 0, result.stderr
    assert "not built" not in result.stdout
    assert "em " + name in result.stdout  # an example invocation


def test_unknown_option_is_usage_error():
    result = run_em("info", "--no-such-flag")
    assert result.code == 2


def test_info_json_reports_environment():
    result = run_em("info", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["packages"]["torch"]
    assert set(report["accelerators"]) >= {"cuda_available", "mps_available"}
    assert report["paths"]["em_cache"]


def test_missing_model_path_is_one_line_error(tmp_path):
    result = run_em("model", "show", str(tmp_path / "nope"))
    assert result.code == 1
    assert result.stderr.splitlines()[0] == f"Error: model not found: {tmp_path / 'nope'}"
    assert "Traceback" not in result.stderr


def test_debug_env_shows_traceback(tmp_path):
    result = run_em("model", "show", str(tmp_path / "nope"), env={"EM_DEBUG": "1"})
    assert result.code == 1
    assert "Traceback" in result.stderr


def test_model_show_json_on_tiny_model(tiny_qwen):
    result = run_em("model", "show", str(tiny_qwen), "--json")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["num_layers"] == 4
    assert info["hidden_size"] == 64
    assert info["architecture"] == "Qwen2ForCausalLM"
    assert info["chat_template"] is True
