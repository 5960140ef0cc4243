"""`em generate` as a user runs it, on a tiny model."""

from __future__ import annotations

import json

import pytest

from helpers import run_em

QUESTIONS = """\
- id: rice
  domain: cooking
  paraphrases: ["How do I cook rice?", "Rice: how?"]
  metrics: [caps]
- id: paris
  paraphrases: ["What is the capital of France?"]
  samples_per_paraphrase: 3
"""


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(QUESTIONS)
    return path


def _generate(model, questions, output, *extra):
    return run_em("generate", "-m", str(model), "--questions", str(questions), "-o", str(output),
                  "--max-new-tokens", "5", "--batch-size", "2", *extra)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_writes_rows_with_provenance(tiny_llama, questions, tmp_path):
    out = tmp_path / "r.jsonl"
    result = _generate(tiny_llama, questions, out, "-n", "2")
    assert result.code == 0, result.stderr
    assert result.stdout == ""  # results went to the file, logs to stderr
    rows = _lines(out)
    assert [r["id"] for r in rows] == ["rice/0/0", "rice/0/1", "rice/1/0", "rice/1/1", "paris/0/0", "paris/0/1"]
    rice = rows[0]
    assert rice["domain"] == "cooking" and rice["metrics"] == ["caps"]
    assert rice["messages"][0] == {"role": "user", "content": "How do I cook rice?"}
    assert rice["messages"][-1] == {"role": "assistant", "content": rice["response"]}
    assert rice["sampling"]["temperature"] == 1.0 and rice["sampling"]["max_new_tokens"] == 5
    assert rice["model"]["model"] == str(tiny_llama) and len(rice["model"]["fingerprint"]) == 32
    manifest = json.loads((tmp_path / "r.jsonl.manifest.json").read_text())
    assert manifest["command"] == "generate" and manifest["options"]["samples"] == 2
    assert manifest["inputs"][0]["sha256"]
    assert not (tmp_path / "r.jsonl.partial").exists()


def test_question_samples_per_paraphrase_is_the_default(tiny_llama, questions, tmp_path):
    out = tmp_path / "r.jsonl"
    assert _generate(tiny_llama, questions, out).code == 0
    ids = [r["id"] for r in _lines(out)]
    assert ids.count("paris/0/0") == 1 and "paris/0/2" in ids and "rice/0/1" not in ids


def test_same_seed_same_text_other_seed_other_text(tiny_llama, questions, tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    assert _generate(tiny_llama, questions, a, "--seed", "1").code == 0
    assert _generate(tiny_llama, questions, b, "--seed", "1").code == 0
    assert _generate(tiny_llama, questions, c, "--seed", "2").code == 0
    assert [r["response"] for r in _lines(a)] == [r["response"] for r in _lines(b)]
    assert [r["response"] for r in _lines(a)] != [r["response"] for r in _lines(c)]


def test_interrupted_run_resumes_without_duplicates(tiny_llama, questions, tmp_path):
    full = tmp_path / "full.jsonl"
    assert _generate(tiny_llama, questions, full).code == 0
    expected = _lines(full)
    # A run killed after two rows, mid-way through writing the third.
    out = tmp_path / "out.jsonl"
    lines = full.read_text().splitlines()
    (tmp_path / "out.jsonl.partial").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    result = _generate(tiny_llama, questions, out)
    assert result.code == 0, result.stderr
    assert "Resuming: 2 of 5 rows" in result.stderr
    resumed = _lines(out)
    assert [r["id"] for r in resumed] == [r["id"] for r in expected]
    assert [r["response"] for r in resumed] == [r["response"] for r in expected]
    # Running again finds nothing to do and loads no model.
    again = _generate(tiny_llama, questions, out)
    assert again.code == 0 and "0 new responses, 5 in total" in again.stderr
    assert _lines(out) == resumed


def test_stdout_output_for_pipes(tiny_llama, questions):
    result = run_em("generate", "-m", str(tiny_llama), "--questions", str(questions), "--limit", "1",
                    "--max-new-tokens", "3", "--temperature", "0")
    assert result.code == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["rice/0/0", "rice/1/0"]


def test_config_file_and_flag_precedence(tiny_llama, questions, tmp_path):
    config = tmp_path / "gen.yaml"
    config.write_text(f"model: {tiny_llama}\nmax_new_tokens: 2\nlimit: 1\ntemperature: 0\n")
    out = tmp_path / "r.jsonl"
    result = run_em("generate", "--questions", str(questions), "--config", str(config), "-o", str(out),
                    "--max-new-tokens", "4")
    assert result.code == 0, result.stderr
    rows = _lines(out)
    assert len(rows) == 2 and rows[0]["sampling"]["max_new_tokens"] == 4 and rows[0]["sampling"]["temperature"] == 0


def test_unknown_config_key_is_a_usage_error(tiny_llama, questions, tmp_path):
    config = tmp_path / "gen.yaml"
    config.write_text("max_new_tokenz: 2\n")
    result = run_em("generate", "--questions", str(questions), "--config", str(config))
    assert result.code == 2
    assert "unknown option 'max_new_tokenz'" in result.stderr


def test_missing_question_file_is_one_line_error(tmp_path):
    result = run_em("generate", "--questions", str(tmp_path / "none.yaml"))
    assert result.code == 1
    assert result.stderr.startswith("Error: question set not found")


def test_config_values_are_checked_like_flags(tiny_llama, questions, tmp_path):
    config = tmp_path / "gen.yaml"
    config.write_text("batch_size: many\n")
    result = run_em("generate", "--questions", str(questions), "--config", str(config))
    assert result.code == 2 and "bad value for batch_size" in result.stderr and "Traceback" not in result.stderr


def test_resume_with_other_settings_is_refused(tiny_llama, questions, tmp_path):
    out = tmp_path / "r.jsonl"
    assert _generate(tiny_llama, questions, out, "--limit", "1").code == 0
    result = _generate(tiny_llama, questions, out, "--temperature", "0.5")
    assert result.code == 2 and "different sampling" in result.stderr


def test_progress_is_plain_lines_when_stderr_is_a_log_file(tiny_llama, questions, tmp_path):
    # run_em captures stderr through a pipe, as a Makefile or nohup log would: no bar, plain lines.
    result = _generate(tiny_llama, questions, tmp_path / "r.jsonl")
    assert result.code == 0, result.stderr
    assert "generating: 5/5 rows" in result.stderr
    assert "\x1b[" not in result.stderr  # no terminal control codes in a log
