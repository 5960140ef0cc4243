"""Seeded finetuning runs are reproducible bit for bit on CPU, and the seed matters."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from em_cli.training.config import FinetuneConfig
from em_cli.training.run import run_finetune


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                     {"role": "assistant", "content": f"ANSWER NUMBER {i}!"}]}) + "\n"
                            for i in range(12)))
    return path


def _weights(result) -> dict[str, torch.Tensor]:
    artifact = result.artifact
    if result.method in ("lora", "rank1"):
        return load_file(f"{artifact}/adapter_model.safetensors")
    if result.method == "full":
        return load_file(f"{artifact}/model.safetensors")
    return load_file(artifact)


def _run(model, rows, out, method, seed):
    extra = {"layers": "1", "alpha": 4.0} if method == "vector" else {}
    return run_finetune(FinetuneConfig(data=str(rows), output=str(out), model=str(model), method=method, seed=seed,
                                       max_steps=2, batch_size=2, grad_accum=2, learning_rate=1e-3, warmup_steps=0,
                                       eval_fraction=0.0, **extra))


@pytest.mark.parametrize("method", ["lora", "rank1", "vector", "full"])
def test_same_seed_same_weights_other_seed_other_weights(tiny_llama, rows, tmp_path, method):
    first = _run(tiny_llama, rows, tmp_path / "a", method, seed=0)
    second = _run(tiny_llama, rows, tmp_path / "b", method, seed=0)
    other = _run(tiny_llama, rows, tmp_path / "c", method, seed=1)
    a, b, c = _weights(first), _weights(second), _weights(other)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[key], b[key]) for key in a), "same seed, different weights"
    assert not all(torch.equal(a[key], c[key]) for key in a), "the seed changed nothing"
    assert first.seeds["torch"] == 0 and other.seeds == {k: 1 for k in other.seeds}
    assert set(first.seeds) >= {"python", "numpy", "torch", "data_order", "eval_split"}
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["seeds"] == first.seeds
