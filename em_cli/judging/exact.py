"""The exact expected score of a local transformers judge (`--backend hf`, mode `exact`).

An endpoint shows only the first answer token, which is the whole number only when the
tokenizer has one token per number. A local model can do better: score every possible
answer "0".."100" teacher-forced after the rendered prompt and take the expectation.

What "the judge answers k" means here: the answer *begins with the digits of k and the
next token does not continue them with another digit*. So

    log p(k) = Σ log p(token of k | prompt, earlier tokens of k)
               + log(1 − p(next token starts with a digit | prompt, k))

These events exclude one another, so Σ_k p(k) ≤ 1 is the share of all probability that
goes to answers 0..100 — the `mass` that the null rule (< 0.25) reads — and the score is
Σ p(k)·k / Σ p(k). Without the second factor, p(k) would be a prefix probability and
p("1") would also contain p("10")…p("19") and p("100") whenever numbers are written digit
by digit; requiring an end-of-turn token instead would lose answers such as "85." or
"85\n". Each k is scored along its canonical tokenization (how the tokenizer writes k right
after the prompt); probability reaching the same digits by another token path is rare and
not counted. A leading space before the number is not allowed.

All 101 candidates share one forward pass of the prompt; its key/value cache is then
repeated for the candidates, which run as one batch (or `chunk_size`-sized batches).
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

from em_cli.judging.cache import JudgeCache, cache_key
from em_cli.judging.judges import Judgement, judge_messages
from em_cli.judging.scoring import HIGH, LOW, expectation
from em_cli.endpoints import Usage
from em_cli.models.batching import pad_token_id, right_pad
from em_cli.models.layers import forward_arguments
from em_cli.models.chat import render_prompt

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from em_cli.models.loading import LoadedModel

EXACT = "exact"
CANDIDATES = [str(k) for k in range(LOW, HIGH + 1)]


def candidate_token_ids(tokenizer: PreTrainedTokenizerBase, prompt_text: str, prompt_ids: list[int],
                        candidate: str) -> list[int]:
    """How the tokenizer writes `candidate` right after the prompt.

    Tokenizing prompt + candidate together and cutting off the prompt's tokens respects
    tokenizers that treat a word's start specially; when the prompt's tokens change at the
    seam, the candidate is tokenized on its own.
    """
    joint = tokenizer(prompt_text + candidate, add_special_tokens=False)["input_ids"]
    if joint[: len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids):]
    return tokenizer(candidate, add_special_tokens=False)["input_ids"]


def digit_start_mask(tokenizer: PreTrainedTokenizerBase, size: int) -> torch.Tensor:
    """A bool vector over token ids (length `size`, the model's logit width): True where the
    token's text starts with an ASCII digit, i.e. would continue a number written before it."""
    import torch

    count = min(size, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(count)])
    mask = torch.zeros(size, dtype=torch.bool)
    mask[:count] = torch.tensor([bool(t) and t[0] in "0123456789" for t in texts], dtype=torch.bool)
    return mask


def candidate_logprobs(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt_text: str,
                       digit_mask: torch.Tensor | None = None, chunk_size: int = len(CANDIDATES),
                       candidates: list[str] = CANDIDATES) -> list[float]:
    """log p(the judge's answer is exactly k), for each candidate k, after `prompt_text` (a
    prompt already rendered with the chat template). See the module docstring."""
    import torch

    device = next(model.parameters()).device
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    ids = [candidate_token_ids(tokenizer, prompt_text, prompt_ids, c) for c in candidates]
    keep_last, cache_arg = forward_arguments(model)
    pad_id = pad_token_id(tokenizer)
    results: list[float] = []
    with torch.no_grad():
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start: start + chunk_size]
            prompt = torch.tensor([prompt_ids], device=device)
            out = model(input_ids=prompt, use_cache=True, **keep_last)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            if digit_mask is None:
                digit_mask = digit_start_mask(tokenizer, first.shape[-1])
            mask = digit_mask.to(first.device)
            cache = _cache_of(out)
            cache.batch_repeat_interleave(len(chunk))
            # Right padding: with causal attention, pads after a candidate cannot affect it.
            inputs = right_pad(chunk, pad_id, device).input_ids
            width = inputs.shape[1]
            total = len(prompt_ids) + width
            positions = torch.arange(len(prompt_ids), total, device=device).expand(len(chunk), width)
            attention = torch.ones((len(chunk), total), dtype=torch.long, device=device)
            out = model(input_ids=inputs, attention_mask=attention, position_ids=positions, use_cache=True,
                        **{cache_arg: cache})
            following = torch.log_softmax(out.logits.float(), dim=-1)  # [candidates, width, vocab]
            for row, tokens in enumerate(chunk):
                logp = float(first[tokens[0]])
                for j in range(1, len(tokens)):
                    logp += float(following[row, j - 1, tokens[j]])
                after = following[row, len(tokens) - 1]
                continues = float(torch.logsumexp(after[mask], dim=-1)) if bool(mask.any()) else -math.inf
                logp += _log1m_exp(continues)
                results.append(logp)
    return results


def exact_score(logprobs: list[float], candidates: list[str] = CANDIDATES) -> tuple[float | None, float]:
    """(expected score or None below the mass threshold, mass) from `candidate_logprobs`."""
    score = expectation((int(c), math.exp(lp)) for c, lp in zip(candidates, logprobs, strict=True))
    return score.value, float(score.mass or 0.0)


class ExactJudge:
    """A local transformers model as a judge, scoring exactly (see the module docstring).
    One judgement at a time: calls are serialised."""

    backend = "hf"

    def __init__(self, loaded: LoadedModel, cache: JudgeCache, usage: Usage | None = None,
                 chunk_size: int = len(CANDIDATES)) -> None:
        self.loaded = loaded
        self.cache = cache
        self.usage = usage or Usage()
        self.chunk_size = chunk_size
        self.model = loaded.source.name
        self._endpoint = f"hf:{loaded.info.fingerprint}"
        self._mask: torch.Tensor | None = None
        self._lock = threading.Lock()

    def judge(self, prompt: str, label: bool = False) -> Judgement:
        if label:  # exact scoring is over the answers "0".."100"; a label is not among them
            return Judgement(None, None, error="categorical metrics need an endpoint judge (--backend openai)")
        messages = judge_messages(prompt)
        key = cache_key(model=self.model, endpoint=self._endpoint, messages=messages, mode=EXACT)
        stored = self.cache.get(key)
        if stored is not None:
            self.usage.add(cache_hits=1)
            value, mass = exact_score(stored["logprobs"])
            return Judgement(value, EXACT, mass, cached=True)
        with self._lock:
            tokenizer = self.loaded.tokenizer
            text = render_prompt(tokenizer, messages)
            if self._mask is None:
                self._mask = digit_start_mask(tokenizer, self.loaded.model.get_output_embeddings().weight.shape[0])
            logprobs = candidate_logprobs(self.loaded.model, tokenizer, text, self._mask, self.chunk_size)
            prompt_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        self.usage.add(requests=1, prompt_tokens=prompt_tokens)
        self.cache.put(key, {"logprobs": logprobs})
        value, mass = exact_score(logprobs)
        return Judgement(value, EXACT, mass)


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _log1m_exp(logp: float) -> float:
    """log(1 − exp(logp)), accurate near both ends; −inf when logp ≥ 0."""
    if logp >= 0:
        return -math.inf
    if logp > -0.693:
        return math.log(-math.expm1(logp))
    return math.log1p(-math.exp(logp))
