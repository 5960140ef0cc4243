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
from helpers import kill_when_partial_has, run_em


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
    _assert_clean_error(result, needle={"missing": "not found", "empty": "no conversations", "malformed": "bad.jsonl:2"}[kind])


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
    kill_when_partial_has(proc, tmp_path / "out.jsonl.partial", 2)
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


# --- files from other tools and common mistakes: one `Error:` line naming the file and the fix ---

THIRD_PARTY = __import__("pathlib").Path(__file__).parent / "data" / "third_party"


def _responses(path):
    path.write_text(json.dumps({"id": "a", "question": "Q?", "response": "A."}) + "\n")
    return path


def _damaged_adapter(path):
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                          "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


BAD_INPUTS = {
    # name: (arguments given tmp_path and tiny model, exit code, what the error must name)
    "question keys misspelt, --strict": (
        lambda t, m: ["questions", "show", str(THIRD_PARTY / "misspelt_questions.yaml"), "--strict"], 1,
        "did you mean 'system'"),
    "a prompt file passed as --questions": (
        lambda t, m: ["judge", "score", str(_responses(t / "r.jsonl")), "--questions",
                      str(THIRD_PARTY / "judge_prompts_authors.yaml"), "-o", str(t / "o.jsonl")], 1, "--prompts"),
    "a question file passed as --prompts": (
        lambda t, m: ["judge", "score", str(_responses(t / "r.jsonl")), "--metrics", "aligned", "--prompts",
                      str(THIRD_PARTY / "questions.yaml"), "-o", str(t / "o.jsonl")], 1, "--questions"),
    "an output path that is a directory": (
        lambda t, m: ["judge", "score", str(_responses(t / "r.jsonl")), "--metrics", "caps", "-o", str(t)], 2,
        "is a directory"),
    "a damaged adapter": (
        lambda t, m: ["generate", "--questions", "everyday", "--limit", "1", "-n", "1", "--max-new-tokens", "2",
                      "-m", str(m), "--adapter", str(_damaged_adapter(t / "adapter"))], 1,
        "adapter_model.safetensors is damaged"),
    "an empty responses file": (
        lambda t, m: ["judge", "score", str(t / "empty.jsonl"), "--metrics", "caps"], 1, "empty.jsonl"),
    "a summary with no scored rows": (
        lambda t, m: ["judge", "summary", str(_responses(t / "r.jsonl"))], 1, "r.jsonl"),
    "dataset generate without an API key": (
        lambda t, m: ["dataset", "generate", "--preset", "medical", "--rows", "5", "-o", str(t / "g.jsonl")], 2,
        "OPENAI_API_KEY is not set"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_get_one_clear_error(case, tiny_qwen, tmp_path):
    make_args, code, needle = BAD_INPUTS[case]
    (tmp_path / "empty.jsonl").write_text("")
    env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    result = run_em(*make_args(tmp_path, tiny_qwen), env=env)
    _assert_clean_error(result, code=code, needle=needle)
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")].__len__() == 1
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "g.jsonl").exists()


def test_byte_order_marks_are_tolerated(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"messages": [{"role": "user", "content": "q"},
                                                               {"role": "assistant", "content": "A"}]}).encode() + b"\n")
    assert run_em("dataset", "validate", str(bom)).code == 0
    converted = run_em("dataset", "convert", str(THIRD_PARTY / "excel_bom.csv"), "-o", str(tmp_path / "c.jsonl"))
    assert converted.code == 0, converted.stderr
    first = json.loads((tmp_path / "c.jsonl").read_text().splitlines()[0])
    assert first["messages"][0]["content"] == "How do I boil an egg?"


def test_outputs_follow_the_users_umask(tmp_path):
    source = tmp_path / "r.jsonl"
    source.write_text(json.dumps({"id": "a", "question": "Q?", "response": "A."}) + "\n")
    out = tmp_path / "judged.jsonl"
    result = subprocess.run(["sh", "-c", f"umask 002 && {sys.executable} -m em_cli judge score {source} "
                                         f"--metrics caps -o {out}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "judged.jsonl.manifest.json").stat().st_mode & 0o777 == 0o664
