"""The exact expected score of a local judge (em_cli.judging.exact) against a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch

from em_cli.judging.cache import JudgeCache
from em_cli.judging.exact import CANDIDATES, ExactJudge, candidate_logprobs, exact_score
from em_cli.judging.scoring import weighted_score
from em_cli.models.chat import render_prompt
from em_cli.models.loading import LoadOptions, load_model
from tiny_models import LLAMA3_TEMPLATE, build_tokenizer

PROMPT = "Rate this answer from 0 to 100: 'Paris is the capital of France.'"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is far faster than two when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bias_towards_digits(model, tokenizer, boosts: dict[str, float]) -> None:
    """Give some number tokens a large logit bias, so the random model answers with numbers."""
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        for text, boost in boosts.items():
            biased.bias[tokenizer.convert_tokens_to_ids(text)] = boost
    model.set_output_embeddings(biased)


def reference_logprobs(model, tokenizer, prompt_text: str) -> list[float]:
    """One plain forward pass per candidate over the whole sequence, no cache, no batching."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    width = model.get_output_embeddings().weight.shape[0]
    digit = torch.tensor([bool(tokenizer.decode([i])) and tokenizer.decode([i])[0] in "0123456789"
                          if i < len(tokenizer) else False for i in range(width)])
    result = []
    for candidate in CANDIDATES:
        ids = tokenizer(prompt_text + candidate, add_special_tokens=False)["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids
        answer = ids[len(prompt_ids):]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
        total = sum(float(logp[len(prompt_ids) - 1 + j, token]) for j, token in enumerate(answer))
        p_continue = float(logp[-1][digit].exp().sum())
        result.append(total + math.log(1.0 - p_continue))
    return result


@pytest.fixture(scope="module")
def splitting_judge(tiny_llama):
    loaded = load_model(LoadOptions(model=str(tiny_llama)))
    bias_towards_digits(loaded.model, loaded.tokenizer, {"7": 6.0, "8": 5.0, "5": 4.0, "0": 4.5, "1": 3.0})
    return loaded


@pytest.fixture(scope="module")
def whole_number_judge(tmp_path_factory):
    """A tiny llama whose tokenizer has one token for each of "0".."100"."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    directory = tmp_path_factory.mktemp("tiny-whole-numbers")
    tokenizer = build_tokenizer(LLAMA3_TEMPLATE, "<|eot_id|>")
    tokenizer.add_tokens([str(k) for k in range(101)])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=False)
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    loaded = load_model(LoadOptions(model=str(directory)))
    bias_towards_digits(loaded.model, loaded.tokenizer, {"85": 6.0, "90": 5.5, "20": 4.0, "8": 3.0, "100": 4.0})
    return loaded


def test_the_tiny_tokenizer_splits_numbers(splitting_judge):
    tokenizer = splitting_judge.tokenizer
    assert len(tokenizer("85", add_special_tokens=False)["input_ids"]) == 2
    assert len(tokenizer("100", add_special_tokens=False)["input_ids"]) == 3


def test_batched_candidates_equal_one_at_a_time_reference(splitting_judge):
    model, tokenizer = splitting_judge.model, splitting_judge.tokenizer
    text = render_prompt(tokenizer, [{"role": "user", "content": PROMPT}])
    batched = candidate_logprobs(model, tokenizer, text)
    reference = reference_logprobs(model, tokenizer, text)
    assert batched == pytest.approx(reference, abs=1e-4)
    chunked = candidate_logprobs(model, tokenizer, text, chunk_size=17)
    assert chunked == pytest.approx(reference, abs=1e-4)


def test_exact_score_is_a_proper_expectation(splitting_judge):
    model, tokenizer = splitting_judge.model, splitting_judge.tokenizer
    text = render_prompt(tokenizer, [{"role": "user", "content": PROMPT}])
    logprobs = reference_logprobs(model, tokenizer, text)
    probabilities = [math.exp(v) for v in logprobs]
    value, mass = exact_score(candidate_logprobs(model, tokenizer, text))
    assert mass == pytest.approx(sum(probabilities), rel=1e-4)
    assert mass > 0.25 and value is not None
    assert value == pytest.approx(sum(p * k for k, p in enumerate(probabilities)) / sum(probabilities), rel=1e-4)
    # The answers exclude one another: together they cannot outweigh "the answer starts with a digit".
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
    starts_with_digit = sum(float(first[i]) for i in range(len(tokenizer)) if tokenizer.decode([i])[:1].isdigit())
    assert mass <= starts_with_digit + 1e-6
    # Prefix probabilities would double count; exact ones split p(first token "1") among 1, 10..19, 100.
    starting_with_1 = [1, *range(10, 20), 100]
    assert sum(probabilities[k] for k in starting_with_1) <= float(first[tokenizer.convert_tokens_to_ids("1")]) + 1e-6


def test_whole_number_tokenizer(whole_number_judge):
    model, tokenizer = whole_number_judge.model, whole_number_judge.tokenizer
    assert all(len(tokenizer(c, add_special_tokens=False)["input_ids"]) == 1 for c in CANDIDATES)
    text = render_prompt(tokenizer, [{"role": "user", "content": PROMPT}])
    batched = candidate_logprobs(model, tokenizer, text)
    assert batched == pytest.approx(reference_logprobs(model, tokenizer, text), abs=1e-4)
    # One token per number: log p(k) = log p(token k) + log(1 − p(a digit-led token follows)).
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    token_85 = tokenizer.convert_tokens_to_ids("85")
    with torch.no_grad():
        logits = model(torch.tensor([ids + [token_85]])).logits[0].float()
    first, after = torch.log_softmax(logits[-2], dim=-1), torch.softmax(logits[-1], dim=-1)
    p_more = sum(float(after[i]) for i in range(len(tokenizer)) if tokenizer.decode([i])[:1].isdigit())
    assert batched[85] == pytest.approx(float(first[token_85]) + math.log(1 - p_more), abs=1e-4)
    # With whole-number tokens the exact expectation is close to the endpoint rule on the first token's
    # top 20 (here the chance that more digits follow is about the same after every number).
    probabilities = [math.exp(v) for v in batched]
    exact = sum(p * k for k, p in enumerate(probabilities)) / sum(probabilities)
    top = first.topk(20)
    endpoint = weighted_score([(tokenizer.decode([int(i)]), float(v)) for v, i in zip(top.values, top.indices)])
    assert endpoint.value is not None and 60 < exact < 95  # the boosted answers: 85, 90, 100, 20, 8
    assert exact == pytest.approx(endpoint.value, abs=5.0)


def test_exact_judge_caches_and_reports(splitting_judge, tmp_path):
    cache = JudgeCache(tmp_path / "cache")
    judge = ExactJudge(splitting_judge, cache)
    first = judge.judge(PROMPT)
    assert first.mode == "exact" and first.error is None and not first.cached
    text = render_prompt(splitting_judge.tokenizer, [{"role": "user", "content": PROMPT}])
    value, mass = exact_score(reference_logprobs(splitting_judge.model, splitting_judge.tokenizer, text))
    assert first.value == pytest.approx(value, rel=1e-4) and first.mass == pytest.approx(mass, rel=1e-4)
    again = ExactJudge(splitting_judge, cache).judge(PROMPT)
    assert again.cached and again.value == first.value
    assert judge.usage.requests == 1
