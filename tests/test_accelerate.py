"""`em finetune` under `accelerate launch` with two processes (DDP over gloo, on CPU).

Two processes at batch 1 must train what one process at batch 2 trains (the same global
batch), write one run directory (process 0 alone), and resume from a checkpoint.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from em_cli.artifacts.tensors import TensorFile
from em_cli.training.config import FinetuneConfig
from em_cli.training.run import run_finetune
from test_training import _write

pytestmark = pytest.mark.slow  # each launch starts three Python processes: tens of seconds on 2 cores

STEPS = 4
RUN_FILES = {"checkpoints", "config.yaml", "log.jsonl", "manifest.json", "summary.json"}
# Training options shared by both runs; the batch is the only difference (2 × 1 vs 1 × 2).
SETTINGS = dict(max_steps=STEPS, grad_accum=1, save_steps=2, eval_fraction=0.0, learning_rate=1e-3,
                warmup_steps=0, kl_weight=1.0, device="cpu")


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def data(tmp_path):
    """12 training rows of three answer lengths (so that batches of two pad), 5 KL rows."""
    train = [_chat(f"Question {i}?", f"ANSWER NUMBER {i}!" + " MORE" * (i % 3)) for i in range(12)]
    kl = [_chat(f"Other {i}?", f"a plain answer {i}.") for i in range(5)]
    return _write(tmp_path / "train.jsonl", train), _write(tmp_path / "kl.jsonl", kl)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _flags(settings: dict) -> list[str]:
    return [arg for key, value in settings.items() for arg in (f"--{key.replace('_', '-')}", str(value))]


def _launch(model, data, out, *extra: str) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2 -m em_cli finetune …` (--multi_gpu is
    accelerate's torchrun launcher; with --device cpu each process trains on the CPU, over gloo)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "em_cli", "finetune", str(data[0]), "-o", str(out),
               "-m", str(model), "--kl-data", str(data[1]), "--batch-size", "1", *_flags(SETTINGS), *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _reference(model, data, out, **overrides):
    """One process, batch 2: the same global batch as two processes at batch 1."""
    return run_finetune(FinetuneConfig(data=str(data[0]), output=str(out), model=str(model), kl_data=str(data[1]),
                                       batch_size=2, **SETTINGS, **overrides))


def _assert_one_run_directory(out, artifact: str, tokens: int | None = None) -> None:
    assert {p.name for p in out.iterdir()} == RUN_FILES | {artifact}  # no leftover temporary files
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == STEPS
    if tokens is not None:
        assert summary["tokens_trained"] == tokens  # counted over both processes
    assert json.loads((out / "manifest.json").read_text())["results"]["steps"] == STEPS
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries if "sft_loss" in e] == list(range(1, STEPS + 1))  # not one per process
    assert [e["step"] for e in entries if "train_runtime" in e] == [STEPS]


def _progress_steps(stderr: str) -> list[str]:
    return [line.split()[1] for line in stderr.splitlines() if line.startswith("step ")]


def test_two_processes_train_what_one_process_trains_with_the_same_global_batch_and_resume(
        tiny_llama, data, tmp_path):
    reference = _reference(tiny_llama, data, tmp_path / "one")
    expected = load_file(f"{reference.artifact}/adapter_model.safetensors")
    out = tmp_path / "two"
    done = _launch(tiny_llama, data, out)
    _assert_one_run_directory(out, "adapter", reference.tokens_trained)
    assert _progress_steps(done.stderr) == [f"{step}/{STEPS}" for step in range(1, STEPS + 1)]
    assert done.stdout.count("Run directory") + done.stderr.count("Run directory") == 1  # process 0 reports
    assert done.stdout.count(" steps, loss ") == 1
    trained = load_file(out / "adapter" / "adapter_model.safetensors")
    assert trained.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(trained[key], expected[key], rtol=1e-4, atol=1e-6)

    # A run killed just after its step-2 checkpoint: --resume continues from there.
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    shutil.rmtree(out / "adapter")
    (out / "summary.json").unlink()
    (out / "manifest.json").unlink()
    done = _launch(tiny_llama, data, out, "--resume")
    assert json.loads((out / "summary.json").read_text())["resumed_from"].endswith("checkpoint-2")
    assert _progress_steps(done.stderr) == ["3/4", "4/4"]
    _assert_one_run_directory(out, "adapter")  # (a resumed run counts the tokens it trained itself)
    resumed = load_file(out / "adapter" / "adapter_model.safetensors")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=1e-4, atol=1e-6)


def test_two_processes_train_a_steering_vector_like_one_process(tiny_llama, data, tmp_path):
    vector = dict(method="vector", layers="2", alpha=4.0)
    reference = _reference(tiny_llama, data, tmp_path / "one", **vector)
    out = tmp_path / "two"
    _launch(tiny_llama, data, out, *_flags(vector))
    _assert_one_run_directory(out, "vector.safetensors", reference.tokens_trained)
    trained = TensorFile.load(out / "vector.safetensors", kind="vector").layer(2)
    expected = TensorFile.load(reference.artifact, kind="vector").layer(2)
    assert float(expected.norm()) > 0
    torch.testing.assert_close(trained, expected, rtol=1e-4, atol=1e-6)
