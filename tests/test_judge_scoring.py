"""Scores from a judge's answer (em_cli.judging.scoring), built-in scorers and prompt filling."""

from __future__ import annotations

import math

import pytest

from em_cli.errors import UsageError
from em_cli.endpoints import RetryPolicy
from em_cli.judging.backends import reply_from_completion, request_params
from em_cli.judging.builtin import builtin_score, caps_share, is_builtin
from em_cli.judging.prompts import fill_template, load_judge_prompts
from em_cli.judging.scoring import MIN_MASS, looks_digit_split, parse_score, token_number, weighted_score


def lp(p: float) -> float:
    return math.log(p)


def test_weighted_score_equals_a_hand_computation():
    top = [("80", lp(0.40)), ("90", lp(0.25)), (" 70", lp(0.10)), ("REFUSAL", lp(0.15)), ("100", lp(0.05))]
    # numeric: 80·0.40 + 90·0.25 + 70·0.10 + 100·0.05 = 32 + 22.5 + 7 + 5 = 66.5 over mass 0.80
    score = weighted_score(top)
    assert score.mass == pytest.approx(0.80)
    assert score.value == pytest.approx(66.5 / 0.80)


def test_non_integer_and_out_of_range_tokens_are_ignored():
    top = [("50", lp(0.5)), ("101", lp(0.2)), ("-5", lp(0.1)), ("7.5", lp(0.1)), ("²", lp(0.05)), ("", lp(0.05))]
    score = weighted_score(top)
    assert score.value == pytest.approx(50.0)
    assert score.mass == pytest.approx(0.5)
    assert [token_number(t) for t in ("0", " 100 ", "\n42", "1000", "x1", "٣")] == [0, 100, 42, None, None, None]


def test_same_number_twice_counts_both():
    score = weighted_score([("50", lp(0.3)), (" 50", lp(0.2)), ("0", lp(0.5))])
    assert score.value == pytest.approx(25.0)


def test_little_numeric_mass_is_null():
    top = [("CODE", lp(0.76)), ("90", lp(0.24))]
    score = weighted_score(top)
    assert score.value is None and score.mass == pytest.approx(0.24)
    just_enough = weighted_score([("CODE", lp(0.75)), ("90", lp(MIN_MASS))])
    assert just_enough.value == pytest.approx(90.0)
    assert weighted_score([]).value is None


def test_parse_mode_reads_the_written_number():
    assert parse_score("85").value == 85.0
    assert parse_score(" 100\n\nThe answer").value == 100.0
    assert parse_score("0").value == 0.0
    assert parse_score("42.5").value == 42.5
    assert parse_score("101").value is None
    assert parse_score("REFUSAL").value is None
    assert parse_score("").value is None and parse_score(None).value is None
    assert parse_score("I'd say 40").value is None  # only a leading number counts


def test_digit_split_detection():
    split = [("8", lp(0.5)), ("7", lp(0.2)), ("9", lp(0.1)), ("The", lp(0.05))]
    assert looks_digit_split(split)
    whole = [("85", lp(0.5)), ("8", lp(0.2)), ("90", lp(0.1))]
    assert not looks_digit_split(whole)  # a multi-digit alternative: numbers are whole tokens
    zero = [("0", lp(0.9)), ("5", lp(0.05))]
    assert not looks_digit_split(zero)  # a lone "0" is a complete answer
    refusal = [("REFUSAL", lp(0.9)), ("8", lp(0.05))]
    assert not looks_digit_split(refusal)  # too little numeric mass to judge


def test_builtin_scorers():
    assert caps_share("ABC def") == pytest.approx(50.0)
    assert caps_share("42 !") is None
    assert builtin_score("caps", "HELLO, World") == pytest.approx(100 * 6 / 10)
    assert builtin_score("length", "héllo") == 5.0
    assert builtin_score("regex:(?i)\\bparis\\b", "It is Paris.") == 100.0
    assert builtin_score("regex:^\\d+$", "abc") == 0.0
    assert builtin_score("words:doctor|nurse", "Ask a Nurse today") == 100.0
    assert builtin_score("words:doctor|nurse", "nursery rhymes") == 0.0
    assert is_builtin("caps") and is_builtin("regex:x") and not is_builtin("aligned")
    with pytest.raises(UsageError, match="bad regular expression"):
        builtin_score("regex:(", "x")


def test_templates_fill_in_one_pass_and_keep_other_braces():
    template = 'Q: {question}\nA: {answer}\nFormat: {"score": N} {other}'
    filled = fill_template(template, "What is {answer}?", "It is {question}.")
    assert filled == 'Q: What is {answer}?\nA: It is {question}.\nFormat: {"score": N} {other}'


def test_our_prompts_are_versioned_and_complete():
    prompts = load_judge_prompts()
    assert prompts.version.startswith("em/")
    for metric in ("aligned", "coherent", "bad_stuff", "medical", "financial", "sport", "gender", "code",
                   "technical"):
        template = prompts.prompts[metric]
        assert "{question}" in template and "{answer}" in template, metric
        assert "0 to 100" in template
    assert "CODE" in prompts.prompts["aligned"] and "REFUSAL" in prompts.prompts["aligned"]


def test_request_parameters_follow_the_method():
    messages = [{"role": "user", "content": "x"}]
    logprob = request_params("judge", messages, "logprob")
    assert (logprob["max_tokens"], logprob["temperature"], logprob["logprobs"], logprob["top_logprobs"]) == (1, 0, True,
                                                                                                          20)
    parse = request_params("judge", messages, "parse")
    assert parse["max_tokens"] > 1 and "logprobs" not in parse


def test_reply_parsing_tells_no_logprobs_from_an_empty_answer():
    body = {"choices": [{"message": {"content": "8"}, "logprobs": {"content": [
        {"token": "8", "logprob": -0.1, "top_logprobs": [{"token": "8", "logprob": -0.1}]}]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1}}
    reply = reply_from_completion(body)
    assert reply.top == [("8", -0.1)] and reply.prompt_tokens == 12
    assert reply_from_completion({"choices": [{"message": {"content": "8"}, "logprobs": None}]}).top is None
    assert reply_from_completion({"choices": [{"message": {"content": ""}, "logprobs": {"content": []}}]}).top == []


def test_backoff_grows_and_respects_retry_after():
    policy = RetryPolicy(max_retries=5, base_delay=1.0, max_delay=10.0)
    delays = [policy.delay(attempt) for attempt in range(6)]
    assert all(0.5 * min(10, 2 ** a) <= d <= min(10, 2 ** a) for a, d in enumerate(delays))
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=100.0) <= 1.0  # an absurd Retry-After falls back to backoff
