from __future__ import annotations

import pytest
import torch

from em_cli.models.chat import render_prompt
from em_cli.models.loading import LoadOptions, load_model
from em_cli.generation import SamplingSettings, row_seed, sample

GREEDY = SamplingSettings(max_new_tokens=6, temperature=0)


@pytest.fixture(scope="module")
def loaded(tiny_llama):
    return load_model(LoadOptions(model=str(tiny_llama)))


def _prompt(loaded, text):
    return render_prompt(loaded.tokenizer, [{"role": "user", "content": text}])


def test_left_padding_does_not_change_greedy_output(loaded):
    short, long = _prompt(loaded, "Hi"), _prompt(loaded, "How do I cook rice in a pot with water and salt?")
    alone = sample(loaded.model, loaded.tokenizer, [short], [0], GREEDY, top_logprobs=0)[0]
    batched = sample(loaded.model, loaded.tokenizer, [long, short], [0, 0], GREEDY, top_logprobs=0)[1]
    assert alone.token_ids == batched.token_ids
    assert len(alone.logprobs) in (len(alone.token_ids), len(alone.token_ids) + 1)  # + the end-of-turn token
    for a, b in zip(alone.logprobs, batched.logprobs, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


def test_seeded_rows_are_reproducible_and_independent_of_batch(loaded):
    settings = SamplingSettings(max_new_tokens=8, temperature=1.0)
    prompts = [_prompt(loaded, "Tell me about Paris"), _prompt(loaded, "Cook rice")]
    first = sample(loaded.model, loaded.tokenizer, prompts, [1, 2], settings)
    again = sample(loaded.model, loaded.tokenizer, prompts, [1, 2], settings)
    alone = sample(loaded.model, loaded.tokenizer, prompts[1:], [2], settings)
    other_seed = sample(loaded.model, loaded.tokenizer, prompts, [3, 4], settings)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    assert first[1].token_ids == alone[0].token_ids
    assert [c.token_ids for c in first] != [c.token_ids for c in other_seed]


def test_logprobs_match_a_direct_forward_pass(loaded):
    prompt = _prompt(loaded, "What is the capital of France?")
    out = sample(loaded.model, loaded.tokenizer, [prompt], [0], SamplingSettings(max_new_tokens=1, temperature=0),
                 top_logprobs=5)[0]
    ids = loaded.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(loaded.model(ids).logits[0, -1].float(), dim=-1)
    first = out.logprobs[0]
    assert first.token_id == int(expected.argmax())
    assert first.logprob == pytest.approx(float(expected.max()), abs=1e-4)
    values = [value for _, _, value in first.top]
    assert values == sorted(values, reverse=True) and len(values) == 5
    top_ids = [i for i, _, _ in first.top]
    assert top_ids == expected.topk(5).indices.tolist()


def test_tiny_top_p_is_greedy(loaded):
    prompt = _prompt(loaded, "Hello there")
    greedy = sample(loaded.model, loaded.tokenizer, [prompt], [0], GREEDY)[0]
    nucleus = sample(loaded.model, loaded.tokenizer, [prompt], [5],
                     SamplingSettings(max_new_tokens=6, temperature=1.0, top_p=1e-6))[0]
    assert nucleus.token_ids == greedy.token_ids


def test_length_limit_and_finish_reason(loaded):
    out = sample(loaded.model, loaded.tokenizer, [_prompt(loaded, "Hi")], [0],
                 SamplingSettings(max_new_tokens=3, temperature=1.0))[0]
    assert out.finish_reason in ("length", "stop")
    assert len(out.token_ids) <= 3
    if out.finish_reason == "length":
        assert len(out.token_ids) == 3


def test_repetition_penalty_changes_choices(loaded):
    prompt = _prompt(loaded, "rice rice rice rice rice")
    plain = sample(loaded.model, loaded.tokenizer, [prompt], [0], SamplingSettings(max_new_tokens=12, temperature=0))
    penalised = sample(loaded.model, loaded.tokenizer, [prompt], [0],
                       SamplingSettings(max_new_tokens=12, temperature=0, repetition_penalty=50.0))
    repeats = len(penalised[0].token_ids) - len(set(penalised[0].token_ids))
    assert repeats == 0 or penalised[0].token_ids != plain[0].token_ids


def test_row_seed_is_stable_and_distinct():
    assert row_seed(0, "q/0/0") == row_seed(0, "q/0/0")
    assert row_seed(0, "q/0/0") != row_seed(0, "q/0/1") != row_seed(1, "q/0/0")
    assert 0 <= row_seed(7, "x") < 2**63


def test_sampling_through_a_peft_adapter_uses_no_deprecated_cache_argument(tiny_qwen):
    import warnings

    from peft import LoraConfig, get_peft_model

    from em_cli.models.loading import LoadOptions, load_model
    from em_cli.generation import SamplingSettings, sample

    loaded = load_model(LoadOptions(model=str(tiny_qwen)))
    model = get_peft_model(loaded.model, LoraConfig(r=2, target_modules=["q_proj"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sample(model, loaded.tokenizer, ["Hello there"], [1], SamplingSettings(max_new_tokens=4))
    assert not [w for w in caught if "past_key_values" in str(w.message)]
