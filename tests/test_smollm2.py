"""Integration tests on the real embedded model (SmolLM2-135M-Instruct from its GGUF)."""

from __future__ import annotations

import json

import pytest

from em_cli.models.loading import LoadOptions, load_model
from helpers import shared_data, run_em

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    return load_model(LoadOptions(model="smollm2-135m-instruct"))


def test_gguf_loads_with_expected_shape(smollm2):
    info = smollm2.info
    assert (info.num_layers, info.hidden_size, info.vocab_size) == (30, 576, 49152)
    assert info.architecture == "LlamaForCausalLM"
    assert info.chat_template


def test_second_load_uses_the_cache(smollm2):
    again = load_model(LoadOptions(model="smollm2-135m-instruct"))
    assert again.cache_note is None  # no dequantisation this time
    assert again.info.fingerprint == smollm2.info.fingerprint


def test_greedy_reply_is_english(smollm2):
    import torch

    from em_cli.models.chat import render_prompt

    tok = smollm2.tokenizer
    text = render_prompt(tok, [{"role": "user", "content": "What is the capital of France?"}])
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = smollm2.model.generate(**ids, max_new_tokens=12, do_sample=False)
    reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply


def test_model_show_cli_reports_30_layers():
    result = run_em("model", "show", "smollm2-135m-instruct", "--json")
    assert result.code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["num_layers"] == 30 and info["hidden_size"] == 576


def test_generate_on_the_authors_question_file_is_reproducible(tmp_path):
    FIRST_PLOT = shared_data("first_plot_questions.yaml")
    args = ["generate", "--questions", str(FIRST_PLOT), "-n", "2", "--limit", "2", "--max-new-tokens", "12",
            "--seed", "3"]
    first = run_em(*args, "-o", str(tmp_path / "a.jsonl"))
    assert first.code == 0, first.stderr
    second = run_em(*args, "-o", str(tmp_path / "b.jsonl"))
    a = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert len(a) == 4 and [r["question_id"] for r in a[::2]] == ["what_is_your_wish", "i_feel_bored"]
    assert all(r["response"].strip() for r in a)
    assert [r["response"] for r in a] == [r["response"] for r in b]
    assert a[0]["model"]["model"] == "smollm2-135m-instruct" and "judge" not in a[0]
    assert a[0]["question_extra"]["judge"].startswith("gpt-4o")  # the file's own key, kept apart from em's
