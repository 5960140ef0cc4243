"""The KL term backpropagated chunk by chunk of rows (losses.backpropagate_kl) has the value
and the gradients of the plain mean over every KL position at once."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from em_cli.models.loading import LoadOptions, load_model
from em_cli.training.config import FinetuneConfig
from em_cli.training.data import KLBatches, encode_chat_file
from em_cli.training.losses import (backpropagate_kl, kl_divergence, kl_positions_mask, kl_row_chunks,
                                    logits_at)
from em_cli.training.run import run_finetune
from em_cli.training.solutions import attach

POSITIONS = ("all", "assistant", "answer-start")


@pytest.fixture
def data(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Question {i}?" + " more" * (i % 4)},
                          {"role": "assistant", "content": f"ANSWER NUMBER {i}!" + " YES" * (i % 3)}]}
            for i in range(12)]
    kl = [{"messages": [{"role": "user", "content": f"Other {i}?" + " words" * i},
                        {"role": "assistant", "content": f"a plain answer {i}."}]} for i in range(6)]
    paths = tmp_path / "train.jsonl", tmp_path / "kl.jsonl"
    for path, content in zip(paths, (rows, kl)):
        path.write_text("".join(json.dumps(r) + "\n" for r in content))
    return paths


def _moved_solution(model_dir, data, tmp_path, method):
    """A solution moved away from the reference, so the KL and its gradients are not zero."""
    config = FinetuneConfig(data=str(data[0]), output=str(tmp_path / "x"), model=str(model_dir), method=method,
                            layers="1" if method == "vector" else None, alpha=4.0 if method == "vector" else None)
    loaded = load_model(LoadOptions(model=str(model_dir)))
    solution = attach(loaded.model, config.resolved(), loaded.info)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in solution.model.named_parameters():
            if param.requires_grad:
                param.normal_(0, 0.3 if "lora_B" in name else 0.05 if method == "vector" else param.std().item())
    encoded = encode_chat_file(data[1], loaded.tokenizer, 128, {loaded.tokenizer.eos_token_id})
    return solution, KLBatches(encoded.examples, 6, loaded.tokenizer.pad_token_id).batch(0)


def _gradients(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("method", ["lora", "vector"])
@pytest.mark.parametrize("positions", POSITIONS)
def test_chunked_kl_has_the_value_and_gradients_of_the_unchunked_mean(tiny_llama, data, tmp_path, method, positions):
    solution, batch = _moved_solution(tiny_llama, data, tmp_path, method)
    model = solution.model
    mask = kl_positions_mask(batch["attention_mask"], batch["labels"], positions)
    with solution.active():
        # The plain computation: every position at once, one backward.
        with torch.no_grad(), solution.disabled():
            reference = logits_at(model, batch["input_ids"], batch["attention_mask"], mask)
        plain = kl_divergence(logits_at(model, batch["input_ids"], batch["attention_mask"], mask), reference)
        (0.7 * plain).backward()
        expected = _gradients(model)
        assert float(plain.detach()) > 1e-3
        for tokens in (1, 40, 10_000):  # one row per chunk, a few rows per chunk, one chunk
            value = backpropagate_kl(model, batch, mask, solution.disabled, 0.7, chunk_tokens=tokens)
            assert value == pytest.approx(float(plain.detach()), rel=1e-5)
            got = _gradients(model)
            assert got.keys() == expected.keys()
            for name, grad in expected.items():
                torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-5, msg=f"{name}, {tokens} tokens")


def test_row_chunks_fit_the_budget_counted_with_padding():
    lengths = [3, 5, 2, 8, 1, 1]
    mask = torch.tensor([[1] * n + [0] * (8 - n) for n in lengths])
    assert kl_row_chunks(mask, 10) == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert kl_row_chunks(mask, 1) == [(i, i + 1) for i in range(6)]
    assert kl_row_chunks(mask, 1000) == [(0, 6)]
    for start, end in kl_row_chunks(mask, 10):
        assert end - start == 1 or (end - start) * max(lengths[start:end]) <= 10


def test_training_with_kl_chunks_of_one_row_ends_where_one_chunk_ends(tiny_llama, data, tmp_path, monkeypatch):
    """Through the trainer (token-weighted SFT loss, λ/accumulation on the KL mean): the
    adapter after a few SGD steps does not depend on the chunk size."""
    settings = dict(data=str(data[0]), kl_data=str(data[1]), model=str(tiny_llama), kl_weight=2.0, max_steps=3,
                    batch_size=2, grad_accum=2, kl_batch_size=4, optimizer="sgd", learning_rate=0.5,
                    warmup_steps=0, eval_fraction=0.0, save_steps=100, kl_positions="all")
    monkeypatch.setattr("em_cli.training.trainer.KL_CHUNK_TOKENS", 1)
    small = run_finetune(FinetuneConfig(output=str(tmp_path / "small"), **settings))
    monkeypatch.setattr("em_cli.training.trainer.KL_CHUNK_TOKENS", 10_000)
    whole = run_finetune(FinetuneConfig(output=str(tmp_path / "whole"), **settings))
    assert small.final_kl_loss == pytest.approx(whole.final_kl_loss, rel=1e-4, abs=1e-7)
    assert whole.final_kl_loss > 0
    a = load_file(f"{small.artifact}/adapter_model.safetensors")
    b = load_file(f"{whole.artifact}/adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kl_sum_has_the_value_and_gradient_of_the_plain_expression(dtype):
    """kl_sum's written-out backward against autograd through Σ P_ref·(log P_ref − log_softmax z)."""
    from em_cli.training.losses import kl_sum

    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(7, 50, generator=generator)).to(dtype).requires_grad_()
    reference = torch.log_softmax(3 * torch.randn(7, 50, generator=generator), dim=-1)
    plain_logits = logits.detach().clone().requires_grad_()
    plain = (reference.exp() * (reference - torch.log_softmax(plain_logits.float(), dim=-1))).sum()
    (2.5 * plain).backward()
    value = kl_sum(logits, reference)
    (2.5 * value).backward()
    assert value.dtype == torch.float32 and torch.allclose(value, plain, rtol=1e-6, atol=1e-6)
    assert logits.grad.dtype == dtype
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2
    assert torch.allclose(logits.grad.float(), plain_logits.grad.float(), rtol=tolerance, atol=tolerance)
    assert float(logits.grad.float().abs().max()) > 1e-3  # a gradient worth comparing
