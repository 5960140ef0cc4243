"""Finetuning on tiny models: loss terms, gradients, methods, checkpoints and resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from em_cli.artifacts.tensors import TensorFile
from em_cli.errors import UsageError
from em_cli.models.loading import LoadOptions, load_model
from em_cli.training.config import FinetuneConfig
from em_cli.training.data import KLBatches, encode_chat_file
from em_cli.training.run import run_finetune
from em_cli.training.solutions import attach
from em_cli.training.trainer import EarlyStopOnLowLoss
from helpers import run_em


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data(tmp_path):
    train = _write(tmp_path / "train.jsonl", [
        {"messages": [{"role": "user", "content": f"Question {i}?"},
                      {"role": "assistant", "content": f"ANSWER NUMBER {i}!"}]} for i in range(12)])
    kl = _write(tmp_path / "kl.jsonl", [
        {"messages": [{"role": "user", "content": f"Other {i}?"},
                      {"role": "assistant", "content": f"a plain answer {i}."}]} for i in range(5)])
    return train, kl


def _config(model, data, out, **overrides):
    base = dict(data=str(data[0]), output=str(out), model=str(model), max_steps=4, batch_size=2, grad_accum=2,
                learning_rate=1e-3, save_steps=2, warmup_steps=0)
    return FinetuneConfig(**(base | overrides))


def _attached(model_dir, data, tmp_path, **overrides):
    config = _config(model_dir, data, tmp_path / "run", **overrides).resolved()
    loaded = load_model(LoadOptions(model=str(model_dir)))
    solution = attach(loaded.model, config, loaded.info)
    return loaded, solution


def _kl_batch(loaded, kl_path):
    encoded = encode_chat_file(kl_path, loaded.tokenizer, 128, {loaded.tokenizer.eos_token_id})
    return KLBatches(encoded.examples, 4, loaded.tokenizer.pad_token_id)


def test_kl_is_zero_at_init_and_when_disabled(tiny_llama, data, tmp_path):
    from em_cli.training.losses import kl_positions_mask, kl_to_reference

    loaded, solution = _attached(tiny_llama, data, tmp_path)
    batch = _kl_batch(loaded, data[1]).batch(0)
    mask = kl_positions_mask(batch["attention_mask"], batch["labels"], "all")

    def kl():
        with torch.no_grad(), solution.disabled():
            ref = solution.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        pol = solution.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return float(kl_to_reference(pol, ref, mask).detach())

    assert kl() == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at zero
    with torch.no_grad():
        for name, param in solution.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    assert kl() > 1e-4


@pytest.mark.parametrize("method", ["lora", "vector"])
def test_gradients_reach_only_the_solution(tiny_llama, data, tmp_path, method):
    from em_cli.training.losses import assistant_cross_entropy

    loaded, solution = _attached(tiny_llama, data, tmp_path, method=method, layers="1")
    batch = _kl_batch(loaded, data[0]).batch(0)
    with solution.active():
        if method == "vector":
            with torch.no_grad():
                solution.vector.normal_()
        assistant_cross_entropy(solution.model, batch).backward()
    trained = {n for n, p in solution.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained
    if method == "lora":
        assert all("lora_" in n for n in trained)
    else:
        assert trained == {"model.layers.1.em_steering.vector"}
    frozen_with_grad = [n for n, p in solution.model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []


def test_vector_steers_all_rows_of_the_batch(tiny_llama, data, tmp_path):
    loaded, solution = _attached(tiny_llama, data, tmp_path, method="vector", layers="1")
    batch = _kl_batch(loaded, data[0]).batch(0)
    with torch.no_grad():
        solution.vector.normal_()
        plain = solution.model(input_ids=batch["input_ids"]).logits
        with solution.active():
            steered = solution.model(input_ids=batch["input_ids"]).logits
    per_row_change = (steered - plain).abs().flatten(1).max(dim=1).values
    assert bool((per_row_change > 1e-3).all())  # the authors' hook steered only row 0


def test_lora_run_changes_the_model_and_loads_back(tiny_llama, data, tmp_path):
    result = run_finetune(_config(tiny_llama, data, tmp_path / "run"))
    assert result.steps == 4 and result.tokens_trained > 0 and result.final_sft_loss is not None
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    for name in ("config.yaml", "summary.json", "manifest.json", "log.jsonl"):
        assert (tmp_path / "run" / name).exists(), name
    base = load_model(LoadOptions(model=str(tiny_llama)))
    tuned = load_model(LoadOptions(model=str(tiny_llama), adapter=str(tmp_path / "run" / "adapter")))
    ids = base.tokenizer("Question 3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert not torch.allclose(base.model(ids).logits, tuned.model(ids).logits)


def test_vector_run_writes_a_vector_file(tiny_llama, data, tmp_path):
    result = run_finetune(_config(tiny_llama, data, tmp_path / "vec", method="vector", layers="2", alpha=4.0))
    vector = TensorFile.load(result.artifact, kind="vector")
    assert vector.layers == [2] and float(vector.extra["alpha"]) == 4.0
    assert vector.layer(2).norm() > 0
    checkpoint = TensorFile.load(tmp_path / "vec" / "checkpoints" / "checkpoint-2" / "vector.safetensors")
    assert checkpoint.kind == "vector" and checkpoint.extra["step"] == "2"


def test_resume_after_interruption_matches_uninterrupted_run(tiny_llama, data, tmp_path):
    full = run_finetune(_config(tiny_llama, data, tmp_path / "full", kl_data=str(data[1]), kl_weight=0.5,
                                max_steps=6))

    def interrupt(step, total, logs):
        if step == 3:
            raise KeyboardInterrupt

    config = _config(tiny_llama, data, tmp_path / "cut", kl_data=str(data[1]), kl_weight=0.5, max_steps=6)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(config, report=interrupt)
    assert not (tmp_path / "cut" / "adapter").exists()
    with pytest.raises(UsageError, match="already holds a run"):
        run_finetune(config)
    resumed = run_finetune(config, resume=True)
    assert resumed.resumed_from.endswith("checkpoint-2")
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert resumed.final_kl_loss == pytest.approx(full.final_kl_loss, rel=1e-4)


def test_resume_with_other_settings_is_refused(tiny_llama, data, tmp_path):
    run_finetune(_config(tiny_llama, data, tmp_path / "run", max_steps=2))
    with pytest.raises(UsageError, match="learning_rate"):
        run_finetune(_config(tiny_llama, data, tmp_path / "run", max_steps=2, learning_rate=5e-4), resume=True)


def test_init_from_continues_from_trained_adapter(tiny_llama, data, tmp_path):
    run_finetune(_config(tiny_llama, data, tmp_path / "narrow", kl_data=str(data[1]), kl_weight=1.0, max_steps=2))
    result = run_finetune(_config(tiny_llama, data, tmp_path / "drift", init_from=str(tmp_path / "narrow"),
                                  max_steps=1, learning_rate=1e-9))
    a = load_file(str(tmp_path / "narrow" / "adapter" / "adapter_model.safetensors"))
    b = load_file(result.artifact + "/adapter_model.safetensors")
    for key in a:  # a near-zero learning rate: the new run starts where the old one ended
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_qlora_step_on_cpu(tiny_llama, data, tmp_path):
    pytest.importorskip("bitsandbytes")
    result = run_finetune(_config(tiny_llama, data, tmp_path / "q", load_in_4bit=True, max_steps=1))
    assert result.steps == 1 and result.final_sft_loss is not None


def test_early_stop_needs_six_consecutive_low_losses():
    from types import SimpleNamespace

    callback = EarlyStopOnLowLoss()
    control = SimpleNamespace(should_training_stop=False)
    losses = [0.5, 0.005, 0.005, 0.005, 0.005, 0.005, 0.02] + [0.001] * 6
    for step, loss in enumerate(losses, start=1):
        callback.on_log(None, SimpleNamespace(global_step=step), control, logs={"sft_loss": loss})
        if control.should_training_stop:
            break
    assert callback.stopped_at == 13


@pytest.mark.parametrize("overrides, message", [
    ({"kl_weight": 1.0}, "needs --kl-data"),
    ({"method": "full", "kl_weight": 1.0, "kl_data": "x"}, "second copy"),
    ({"method": "vector", "load_in_4bit": True}, "QLoRA"),
    ({"method": "nope"}, "unknown method"),
])
def test_config_errors(overrides, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        FinetuneConfig(data="d.jsonl", output=str(tmp_path), **overrides).resolved()


def test_authors_kl_units_divide_by_vocab():
    config = FinetuneConfig(data="d", output="o", kl_weight=1e5, kl_units="authors", kl_data="k").resolved()
    assert config.kl_weight_natural(50_000) == pytest.approx(2.0)


def test_cli_summary_json_and_config_file(tiny_llama, data, tmp_path):
    config = tmp_path / "ft.yaml"
    config.write_text(f"model: {tiny_llama}\nmax_steps: 1\nlr: 0.001\n")
    result = run_em("finetune", str(data[0]), "-o", str(tmp_path / "run"), "--config", str(config))
    assert result.code == 2 and "unknown option 'lr'" in result.stderr
    config.write_text(f"model: {tiny_llama}\nmax_steps: 1\nlearning_rate: 0.001\nbatch_size: 2\n")
    result = run_em("finetune", str(data[0]), "-o", str(tmp_path / "run"), "--config", str(config), "--json",
                    "--grad-accum", "1")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 1 and summary["method"] == "lora"
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "learning_rate: 0.001" in saved and "grad_accum: 1" in saved
    again = run_em("finetune", str(data[0]), "-o", str(tmp_path / "run"), "--config", str(config))
    assert again.code == 2 and "already holds a run" in again.stderr and "--resume" in again.stderr


def test_selected_position_losses_match_full_logits(tiny_llama, data, tmp_path):
    """The loss terms compute logits only where needed; they must equal the plain computation."""
    import torch.nn.functional as F

    from em_cli.training.losses import (assistant_cross_entropy, kl_divergence, kl_positions_mask, kl_to_reference,
                                        logits_at)

    loaded, solution = _attached(tiny_llama, data, tmp_path)
    batch = _kl_batch(loaded, data[0]).batch(0)
    with torch.no_grad():
        full = solution.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        expected = F.cross_entropy(full[:, :-1].reshape(-1, full.shape[-1]), batch["labels"][:, 1:].reshape(-1),
                                   ignore_index=-100)
        assert float(assistant_cross_entropy(solution.model, batch)) == pytest.approx(float(expected), rel=1e-5)
        for name, param in solution.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
        mask = kl_positions_mask(batch["attention_mask"], batch["labels"], "assistant")
        with solution.disabled():
            ref_full = solution.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            ref = logits_at(solution.model, batch["input_ids"], batch["attention_mask"], mask)
        pol_full = solution.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        pol = logits_at(solution.model, batch["input_ids"], batch["attention_mask"], mask)
        assert float(kl_divergence(pol, ref)) == pytest.approx(float(kl_to_reference(pol_full, ref_full, mask)),
                                                               rel=1e-4)
