"""Finetuning on tiny models: loss terms, gradients, methods, checkpoints and resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from em_cli.artifacts.tensors import TensorFile
from em_cli.errors import DataError, Interrupted, UsageError
from em_cli.models.loading import LoadOptions, load_model
from em_cli.training.config import FinetuneConfig
from em_cli.training.data import KLBatches, encode_chat_file
from em_cli.training.run import run_finetune
from em_cli.training.solutions import attach
from em_cli.training.trainer import EarlyStopOnLowLoss, EmTrainer
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
    # tokens/s is over the optimizer steps alone: start-up, evaluation and saving are not training
    assert 0 < result.step_time_s < result.wall_time_s
    assert abs(result.tokens_trained / result.tokens_per_second - result.step_time_s) < 0.002
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
    """Ctrl-C after the first step (long before the first regular checkpoint) leaves a
    checkpoint of that step, and --resume from it ends where an uninterrupted run ends."""
    settings = dict(kl_data=str(data[1]), kl_weight=0.5, max_steps=4, save_steps=3, dropout=0.1)
    full = run_finetune(_config(tiny_llama, data, tmp_path / "full", **settings))

    def interrupt(step, total, logs):
        if step == 1:
            raise KeyboardInterrupt

    config = _config(tiny_llama, data, tmp_path / "cut", **settings)
    with pytest.raises(Interrupted) as caught:
        run_finetune(config, report=interrupt)
    assert "step 1" in caught.value.message and "--resume" in caught.value.hint
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-1" / "trainer_state.json").exists()
    assert not (tmp_path / "cut" / "adapter").exists()
    logged = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert logged == [] or all(entry["step"] <= 1 for entry in logged)
    with pytest.raises(UsageError, match="already holds a run"):
        run_finetune(config)
    resumed = run_finetune(config, resume=True)
    assert resumed.resumed_from.endswith("checkpoint-1")
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert resumed.final_kl_loss == pytest.approx(full.final_kl_loss, rel=1e-4)
    assert resumed.eval_loss == pytest.approx(full.eval_loss, rel=1e-5)
    steps = [entry["step"] for entry in map(json.loads, (tmp_path / "cut" / "log.jsonl").read_text().splitlines())
             if "sft_loss" in entry]
    assert steps == [2, 3, 4]  # step 1's entry was never logged: Ctrl-C came first


def test_interrupt_before_the_first_step_offers_no_resume(tiny_llama, data, tmp_path):
    def interrupt(step, total, logs):
        raise KeyboardInterrupt

    config = _config(tiny_llama, data, tmp_path / "run", max_steps=2)
    original = EmTrainer.training_step

    def failing_step(self, *args, **kwargs):
        raise KeyboardInterrupt

    EmTrainer.training_step = failing_step
    try:
        with pytest.raises(Interrupted) as caught:
            run_finetune(config, report=interrupt)
    finally:
        EmTrainer.training_step = original
    assert "before any checkpoint" in caught.value.message and "without --resume" in caught.value.hint
    result = run_finetune(config)  # nothing to resume: a plain re-run starts over
    assert result.steps == 2 and result.resumed_from is None


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
    config.write_text(f"model: {tiny_llama}\nmax_steps: 1\nlr: 0.001\nfoo: 1\nbar_baz: 2\n")
    result = run_em("finetune", str(data[0]), "-o", str(tmp_path / "run"), "--config", str(config))
    assert result.code == 2 and "unknown options 'foo', 'bar_baz'" in result.stderr
    hint = result.stderr.split("Hint:")[1]
    assert "json_" not in hint and "learning-rate" in hint and "json" in hint
    config.write_text(f"model: {tiny_llama}\nmax-steps: 1\nlr: 0.001\nbatch-size: 2\n")
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


def test_init_from_a_vector_run_keeps_its_layer_and_refuses_adapter_options(tiny_llama, data, tmp_path):
    run_finetune(_config(tiny_llama, data, tmp_path / "vec", method="vector", layers="3", alpha=4.0, max_steps=1))
    result = run_finetune(_config(tiny_llama, data, tmp_path / "more", init_from=str(tmp_path / "vec"),
                                  max_steps=1, learning_rate=1e-9))
    assert result.method == "vector"  # inherited, not the lora default
    vector = TensorFile.load(result.artifact, kind="vector")
    assert vector.layers == [3] and float(vector.extra["alpha"]) == 4.0
    torch.testing.assert_close(vector.layer(3), TensorFile.load(tmp_path / "vec" / "vector.safetensors").layer(3),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(UsageError, match="steering vector"):
        run_finetune(_config(tiny_llama, data, tmp_path / "bad", init_from=str(tmp_path / "vec"), rank=4))
    with pytest.raises(UsageError, match="--method lora cannot start from"):
        run_finetune(_config(tiny_llama, data, tmp_path / "bad", init_from=str(tmp_path / "vec"), method="lora"))


def test_init_from_an_adapter_inherits_its_shape_and_refuses_another(tiny_llama, data, tmp_path):
    run_finetune(_config(tiny_llama, data, tmp_path / "r1", method="rank1", layers="2", max_steps=1))
    config = _config(tiny_llama, data, tmp_path / "more", init_from=str(tmp_path / "r1"), max_steps=1)
    result = run_finetune(config)
    saved = (tmp_path / "more" / "config.yaml").read_text()
    assert result.method == "rank1" and "layers: '2'" in saved and "rank: 1" in saved
    with pytest.raises(UsageError, match="--rank 8"):
        run_finetune(_config(tiny_llama, data, tmp_path / "bad", init_from=str(tmp_path / "r1"), rank=8))
    with pytest.raises(UsageError, match="adapts layers"):
        run_finetune(_config(tiny_llama, data, tmp_path / "bad", init_from=str(tmp_path / "r1"), layers="1"))


def test_full_finetune_in_bf16_keeps_float32_master_weights(tiny_llama, data, tmp_path):
    """At lr 2e-5 a bf16 weight (spacing ~1e-4 near 0.02) would not move; the fp32 master does."""
    from safetensors.torch import load_file as load

    result = run_finetune(_config(tiny_llama, data, tmp_path / "full", method="full", dtype="bfloat16",
                                  learning_rate=2e-5, max_steps=2, eval_fraction=0.0))
    assert result.weights_dtype == "float32" and result.compute_dtype == "bfloat16"
    before = load(str(tiny_llama / "model.safetensors"))
    after = load(f"{result.artifact}/model.safetensors")
    key = "model.layers.0.mlp.down_proj.weight"
    assert after[key].dtype == torch.float32
    changed = (after[key] != before[key].float()).float().mean()
    assert changed > 0.9
    # The same step size applied to bf16 weights would leave most of them unchanged.
    rounded = (before[key].bfloat16() + (after[key] - before[key].float()).bfloat16()) != before[key].bfloat16()
    assert rounded.float().mean() < changed


def test_summary_records_split_truncation_and_plan(tiny_llama, data, tmp_path):
    long = tmp_path / "long.jsonl"
    long.write_text(data[0].read_text() + json.dumps(
        {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}) + "\n")
    result = run_finetune(_config(tiny_llama, (long, data[1]), tmp_path / "run", max_steps=2, save_steps=None,
                                  max_length=64))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_rows"] == 1 and len(summary["eval_lines"]) == 1 and summary["eval_loss"] > 0
    assert summary["train_rows"] + summary["eval_rows"] + sum(summary["dropped"].values()) == 13
    assert summary["truncated"]["train"] + summary["truncated"]["eval"] == 1
    assert summary["planned_steps"] == 2 and summary["save_steps"] == 1
    entries = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries if "sft_loss" in e] == [1, 2]
    assert [e["step"] for e in entries if "eval_loss" in e] == [1, 2]
    assert result.eval_loss == summary["eval_loss"]


def test_token_weighted_accumulation_matches_one_big_batch(tiny_llama, data, tmp_path):
    """Two micro-batches of 1 row accumulate to the gradient of one batch of 2 rows: each
    answer token weighs the same whichever micro-batch holds it."""
    one = run_finetune(_config(tiny_llama, data, tmp_path / "one", max_steps=1, batch_size=2, grad_accum=1,
                               eval_fraction=0.0, optimizer="sgd", learning_rate=0.5))
    two = run_finetune(_config(tiny_llama, data, tmp_path / "two", max_steps=1, batch_size=1, grad_accum=2,
                               eval_fraction=0.0, optimizer="sgd", learning_rate=0.5))
    a = load_file(f"{one.artifact}/adapter_model.safetensors")
    b = load_file(f"{two.artifact}/adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a", "completion": "b"}\n', "em dataset convert"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', "no assistant turn"),
])
def test_bad_data_is_refused_before_the_model_loads(tmp_path, content, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as caught:  # the model does not exist: loading would fail first
        run_finetune(FinetuneConfig(data=str(path), output=str(tmp_path / "run"), model=str(tmp_path / "nope")))
    assert message in f"{caught.value.message} {caught.value.hint}"
    if "convert" in message:
        assert f"em dataset convert {path} -o rows.chat.jsonl" in caught.value.hint


def test_cli_refuses_csv_with_the_convert_command_and_prints_plain_progress(tiny_llama, data, tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_text("prompt,completion\na,b\n")
    result = run_em("finetune", str(csv), "-o", str(tmp_path / "x"), "-m", str(tiny_llama))
    assert result.code == 1 and f"em dataset convert {csv} -o rows.jsonl" in result.stderr
    result = run_em("finetune", str(data[0]), "-o", str(tmp_path / "run"), "-m", str(tiny_llama), "--max-steps", "2",
                    "--grad-accum", "1", "--eval-fraction", "0")
    assert result.code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"] and "loss" in lines[0]


def test_answer_start_kl_compares_one_position_per_row_the_one_before_the_first_assistant_token():
    from em_cli.training.losses import IGNORE, kl_positions_mask

    labels = torch.full((2, 8), IGNORE)
    labels[0, 3:6] = 5   # row 0: assistant tokens at 3, 4, 5 (then padding)
    labels[1, 5:8] = 7   # row 1: a longer prompt, assistant tokens at 5, 6, 7
    attention = torch.ones(2, 8, dtype=torch.long)
    attention[0, 6:] = 0
    start = kl_positions_mask(attention, labels, "answer-start")
    assert start.nonzero().tolist() == [[0, 2], [1, 4]]
    assistant = kl_positions_mask(attention, labels, "assistant")
    assert assistant.sum() == 6 and bool((start <= assistant).all())
