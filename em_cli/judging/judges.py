"""A judge: one filled prompt in, one `Judgement` out.

`EndpointJudge` asks an OpenAI-compatible endpoint (through the cache). In mode `auto` it
scores by logprobs and falls back to parsing the written number, for the rest of the run,
when the endpoint returns no logprobs or when its tokenizer writes numbers digit by digit
(so the first token does not carry the whole number) — warning once either way. The mode
that produced each score is recorded with it. A local transformers judge lives in
`em_cli.judging.exact`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from em_cli.judging.backends import LOGPROB, PARSE, OpenAIEndpoint, Reply, RequestFailed
from em_cli.judging.cache import JudgeCache, cache_key
from em_cli.judging.scoring import looks_digit_split, parse_score, weighted_score

log = logging.getLogger(__name__)
AUTO = "auto"
MODES = (AUTO, LOGPROB, PARSE)


@dataclass(frozen=True)
class Judgement:
    """One score (None = no usable number, or a failure: then `error` says why), how it was
    obtained (`mode`: logprob | parse | exact | builtin) and the probability mass behind it."""

    value: float | None
    mode: str | None
    mass: float | None = None
    error: str | None = None
    cached: bool = False


class Judge(Protocol):
    model: str
    backend: str

    def judge(self, prompt: str) -> Judgement: ...


def judge_messages(prompt: str) -> list[dict[str, Any]]:
    """The filled template is the whole conversation: one user message."""
    return [{"role": "user", "content": prompt}]


class EndpointJudge:
    """Judging through an `OpenAIEndpoint`, with the cache in front of it.

    `offline=True` never sends a request: what the cache lacks is a failure (used after a
    Batch API run has filled the cache).
    """

    def __init__(self, endpoint: OpenAIEndpoint, cache: JudgeCache, mode: str = AUTO,
                 warn: Callable[[str], None] | None = None, offline: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.endpoint = endpoint
        self.cache = cache
        self.mode = mode
        self.model = endpoint.settings.model
        self.backend = endpoint.backend
        self.offline = offline
        self._warn = warn or log.warning
        self._lock = threading.Lock()
        self._no_logprobs = False
        self._digit_split = False

    def judge(self, prompt: str) -> Judgement:
        messages = judge_messages(prompt)
        try:
            if self._use_logprobs():
                reply, cached = self.fetch(messages, LOGPROB)
                if reply.top is None:
                    if self.mode == LOGPROB:
                        return Judgement(None, LOGPROB, error="the endpoint returned no logprobs; use --mode parse")
                    self._note("no_logprobs", "the judge endpoint returns no logprobs: scoring by the number it "
                                              "writes instead (mode parse) for the rest of this run")
                else:
                    split = looks_digit_split(reply.top)
                    if split:
                        self._note("digit_split",
                                   "the judge's top tokens are single digits, so its tokenizer splits numbers and "
                                   "the first token does not carry the whole score: "
                                   + ("scoring by the written number (mode parse) for the rest of this run"
                                      if self.mode == AUTO else "keeping --mode logprob as asked; scores are biased"))
                    if not split or self.mode == LOGPROB:
                        score = weighted_score(reply.top)
                        return Judgement(score.value, LOGPROB, score.mass, cached=cached)
            reply, cached = self.fetch(messages, PARSE)
            return Judgement(parse_score(reply.text).value, PARSE, None, cached=cached)
        except RequestFailed as exc:
            return Judgement(None, None, error=str(exc))

    def fetch(self, messages: list[dict[str, Any]], mode: str) -> tuple[Reply, bool]:
        """The endpoint's reply, from the cache when it has it; (reply, came from cache)."""
        key = self.key(messages, mode)
        stored = self.cache.get(key)
        if stored is not None:
            self.endpoint.usage.add(cache_hits=1)
            return Reply.from_json(stored), True
        if self.offline:
            raise RequestFailed(f"no {mode} reply in the cache (the batch did not answer this request); "
                                "re-run without --batch to ask for it live")
        reply = self.endpoint.complete(messages, mode)
        self.cache.put(key, reply.to_json())
        return reply, False

    def key(self, messages: list[dict[str, Any]], mode: str) -> str:
        return cache_key(model=self.model, endpoint=self.endpoint.base_url, messages=messages, mode=mode)

    def _use_logprobs(self) -> bool:
        if self.mode == PARSE:
            return False
        if self.mode == LOGPROB:
            return True
        with self._lock:
            return not (self._no_logprobs or self._digit_split)

    def _note(self, what: str, message: str) -> None:
        with self._lock:
            attribute = f"_{what}"
            first = not getattr(self, attribute)
            setattr(self, attribute, True)
        if first:
            self._warn(message)
