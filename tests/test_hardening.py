"""Bad inputs give a one-line error (or a clean resumable state), never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from em_cli.artifacts.tensors import TensorFile
from helpers import run_em


def _assert_clean_error(result, code=1, needle=None):
    assert result.code == code, (result.code, result.stderr)
    assert "Traceback" not in result.stderr
    first = result.stderr.strip().splitlines()[0] if result.stderr.strip() else ""
    assert first.startswith("Error:") or code == 2, result.stderr
    if needle:
        assert needle in result.stderr, result.stderr


def _chat_file(path, rows=16):
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"ANSWER {i}"}]}) + "\n"
                            for i in range(rows)))
    return path


@pytest.fixture
def files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    malformed = tmp_path / "bad.jsonl"
    malformed.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n'
                         '{"messages": [\n')
    return {"missing": tmp_path / "nope.jsonl", "empty": empty, "malformed": malformed}


@pytest.mark.parametrize("kind", ["missing", "empty", "malformed"])
def test_finetune_bad_data(tiny_llama, files, tmp_path, kind):
    result = run_em("finetune", str(files[kind]), "-m", str(tiny_llama), "-o", str(tmp_path / "run"),
                    "--max-steps", "1")
    _assert_clean_error(result, needle={"missing": "not found", "empty": "no usable", "malformed": "bad.jsonl:2"}[kind])


@pytest.mark.parametrize("kind", ["missing", "empty", "malformed"])
def test_extract_bad_data(tiny_llama, files, tmp_path, kind):
    result = run_em("extract", str(files[kind]), "-m", str(tiny_llama), "-o", str(tmp_path / "a.safetensors"))
    _assert_clean_error(result)
    assert not (tmp_path / "a.safetensors").exists()


@pytest.mark.parametrize("kind", ["missing", "malformed"])
def test_judge_bad_data(files, tmp_path, kind):
    _assert_clean_error(run_em("judge", "score", str(files[kind]), "--metrics", "caps", "-o", str(tmp_path / "o.jsonl")))


def test_nonexistent_layer(tiny_llama, tmp_path):
    rows = tmp_path / "r.jsonl"
    rows.write_text(json.dumps({"question": "q", "response": "a"}) + "\n")
    result = run_em("extract", str(rows), "-m", str(tiny_llama), "--layers", "7", "-o", str(tmp_path / "a.safetensors"))
    _assert_clean_error(result, code=2, needle="layer 7 does not exist")


def test_wrong_model_vector_in_steer(tiny_llama, tmp_path):
    TensorFile(kind="vector", tensors={"layer.1": torch.ones(16)}, model_id="other", model_fingerprint="x",
               hidden_size=16, layers=[1], extra={"alpha": "1.0"}).save(tmp_path / "v.safetensors")
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: a\n  question: Hi\n")
    result = run_em("steer", "-m", str(tiny_llama), "--questions", str(questions), "--vector",
                    str(tmp_path / "v.safetensors"))
    _assert_clean_error(result, needle="hidden size 16")


def test_read_only_output_folder(tiny_llama, tmp_path):
    if os.geteuid() == 0:
        target = "/proc/em-cannot-write-here/out.jsonl"  # root ignores permission bits
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = str(locked / "out.jsonl")
    questions = tmp_path / "q.yaml"
    questions.write_text("- id: a\n  question: Hi\n")
    result = run_em("generate", "-m", str(tiny_llama), "--questions", str(questions), "--max-new-tokens", "2",
                    "-o", target)
    _assert_clean_error(result)


def test_kill_during_generate_then_rerun_loses_and_duplicates_nothing(tiny_llama, tmp_path):
    questions = tmp_path / "q.yaml"
    questions.write_text("".join(f"- id: q{i}\n  question: Question number {i}?\n" for i in range(12)))
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "em_cli", "generate", "-m", str(tiny_llama), "--questions", str(questions),
            "--max-new-tokens", "40", "--batch-size", "1", "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "out.jsonl.partial"
    deadline = time.time() + 120
    while time.time() < deadline and (not partial.exists() or partial.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    result = run_em(*args[3:])
    assert result.code == 0, result.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}/0/0" for i in range(12))


def test_ctrl_c_during_finetune_then_resume(tiny_llama, tmp_path):
    data = _chat_file(tmp_path / "d.jsonl")
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "em_cli", "finetune", str(data), "-m", str(tiny_llama), "-o", str(run_dir),
            "--max-steps", "400", "--save-steps", "1", "--batch-size", "1", "--grad-accum", "1", "--lr", "1e-3"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run_dir / "checkpoints" / "checkpoint-2").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr and "Error: interrupted" in stderr
    again = run_em(*args[3:])
    _assert_clean_error(again, code=2, needle="--resume")


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_kill_during_steer_sweep_then_rerun_loses_and_duplicates_nothing(tiny_llama, tmp_path):
    TensorFile(kind="direction", tensors={"layer.1": torch.randn(64)}, model_id="m", model_fingerprint="x",
               hidden_size=64, layers=[1]).save(tmp_path / "d.safetensors")
    questions = tmp_path / "q.yaml"
    questions.write_text("".join(f"- id: q{i}\n  question: Question number {i}?\n" for i in range(4)))
    out = tmp_path / "sweep.jsonl"
    args = [sys.executable, "-m", "em_cli", "steer", "-m", str(tiny_llama), "--questions", str(questions), "-d",
            str(tmp_path / "d.safetensors"), "--layers", "1", "--scales", "0,1,2", "--max-new-tokens", "40",
            "--batch-size", "1", "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "sweep.jsonl.partial"
    _kill_when(proc, lambda: partial.exists() and partial.read_text().count("\n") >= 3)
    result = run_em(*args[3:])
    assert result.code == 0, result.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 12


def test_kill_during_finetune_then_resume_completes(tiny_llama, tmp_path):
    data = _chat_file(tmp_path / "d.jsonl")
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "em_cli", "finetune", str(data), "-m", str(tiny_llama), "-o", str(run_dir),
            "--max-steps", "30", "--save-steps", "2", "--batch-size", "1", "--grad-accum", "1", "--lr", "1e-3"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, lambda: (run_dir / "checkpoints" / "checkpoint-4").exists())
    result = run_em(*args[3:], "--resume", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 30 and "checkpoint-" in summary["resumed_from"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
