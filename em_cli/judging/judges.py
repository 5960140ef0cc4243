"""A judge: one filled prompt in, one `Judgement` out.

`EndpointJudge` asks an OpenAI-compatible endpoint (through the cache). Before the first
judgement of a run, `prepare` checks the endpoint once and sends one real request as a probe:
it learns which model actually answers (the reply's `model`; cache keys and records use it),
and — in mode `auto` — fixes the scoring mode for the whole run: `logprob`, or `parse` when
the endpoint refuses or omits logprobs or its tokenizer writes numbers digit by digit. So all
rows of one run are scored the same way. Metrics whose judge answers a label
(`type: free_form_judge` questions) are asked in mode `label`. A local transformers judge
lives in `em_cli.judging.exact`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from em_cli.judging.backends import (LABEL, LOGPROB, PARSE, TOP_LOGPROBS, JudgeAbort, OpenAIEndpoint, Reply,
                                     RequestFailed)
from em_cli.judging.cache import JudgeCache, cache_key
from em_cli.judging.scoring import looks_digit_split, parse_score, weighted_score

log = logging.getLogger(__name__)
AUTO = "auto"
MODES = (AUTO, LOGPROB, PARSE)
RAW_LIMIT = 200  # characters of a judge's raw answer kept in the record
T = TypeVar("T")


@dataclass(frozen=True)
class Judgement:
    """One score (None = no usable number, or a failure: then `error` says why), how it was
    obtained (`mode`: logprob | parse | exact | builtin | label) and the probability mass
    behind it. For `label`, `label` holds the judge's answer and `mass` its probability."""

    value: float | None
    mode: str | None
    mass: float | None = None
    error: str | None = None
    cached: bool = False
    raw: str | None = None  # the judge's answer as written (first token in logprob mode)
    label: str | None = None
    top_received: int | None = None  # how many top logprobs the endpoint returned


class Judge(Protocol):
    model: str  # the model that answers (for an endpoint: as the endpoint reports it)
    backend: str

    def judge(self, prompt: str, label: bool = False) -> Judgement: ...


def judge_messages(prompt: str) -> list[dict[str, Any]]:
    """The filled template is the whole conversation: one user message."""
    return [{"role": "user", "content": prompt}]


def label_of(text: str) -> str | None:
    """A categorical judge's answer as a label: its first line, without surrounding
    punctuation or quotes (`"TRUE."` → `TRUE`); None for an empty answer."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    label = line.strip().strip(".,;:!\"'`*").strip()
    return label or None


def label_probability(reply: Reply, label: str) -> float | None:
    """The probability of the label's first token among the top logprobs (None without them)."""
    if not reply.top:
        return None
    matches = [logprob for token, logprob in reply.top if token.strip() and label.startswith(token.strip())]
    return math.exp(max(matches)) if matches else None


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
        self.requested_model = endpoint.settings.model
        self.model = self.requested_model  # the served model, once `prepare` has asked
        self.backend = endpoint.backend
        self.offline = offline
        self.prepared = offline
        self.run_mode = PARSE if mode == PARSE else LOGPROB  # `prepare` settles auto
        self.top_received: int | None = None
        self.listed_models: list[str] | None = None
        self._probe: tuple[str, Reply] | None = None
        self._warn = warn or log.warning

    def prepare(self, probe_prompt: str) -> None:
        """Check the endpoint and settle who answers and how, with one real request (its
        reply is cached, so it is not paid for again)."""
        if self.prepared:
            return
        self.listed_models = self.endpoint.check().models
        messages = judge_messages(probe_prompt)
        if self.run_mode == LOGPROB:
            try:
                reply = self.endpoint.complete(messages, LOGPROB)
            except RequestFailed as exc:
                if exc.status != 400 or self.mode == LOGPROB:
                    raise JudgeAbort(f"the judge's first request failed: {exc}",
                                     hint="try --mode parse if the endpoint cannot return logprobs"
                                     if exc.status == 400 else "check --base-url and --judge-model") from None
                self._warn(f"the endpoint refused a logprobs request ({exc}): scoring by the number the judge "
                           "writes (mode parse) for this run")
                self.run_mode = PARSE
            else:
                self._learn(reply, messages, LOGPROB)
        if self.run_mode == PARSE:
            try:
                reply = self.endpoint.complete(messages, PARSE)
            except RequestFailed as exc:
                raise JudgeAbort(f"the judge's first request failed: {exc}",
                                 hint="check --base-url and --judge-model") from None
            self._learn(reply, messages, PARSE)
        self.prepared = True

    def _learn(self, reply: Reply, messages: list[dict[str, Any]], mode: str) -> None:
        self.model = reply.served_model or self.requested_model
        if self.model != self.requested_model:
            self._warn(f"asked for judge {self.requested_model!r}, the endpoint answered as {self.model!r}: "
                       "judgements record (and the cache keys on) the model that answered")
        if mode == LOGPROB:
            if reply.top is None:
                if self.mode == LOGPROB:
                    raise JudgeAbort("the judge endpoint returns no logprobs", hint="use --mode parse")
                self._warn("the judge endpoint returns no logprobs: scoring by the number it writes "
                           "(mode parse) for this run")
                self.run_mode = PARSE
                return
            if looks_digit_split(reply.top):
                if self.mode == AUTO:
                    self._warn("the judge's tokenizer splits numbers into digits, so the first token does not "
                               "carry the whole score: scoring by the written number (mode parse) for this run")
                    self.run_mode = PARSE
                    return
                self._warn("the judge's tokenizer splits numbers into digits: keeping --mode logprob as asked; "
                           "scores are biased")
            self.top_received = len(reply.top)
            if 0 < len(reply.top) < TOP_LOGPROBS:
                self._warn(f"the endpoint returned {len(reply.top)} top logprobs where {TOP_LOGPROBS} were asked: "
                           "scores rest on fewer alternatives (recorded as top_logprobs in each judgement)")
        key = self.key(messages, mode)
        self.cache.put(key, reply.to_json())
        self._probe = (key, reply)  # serves the first judgement even when the cache is off

    def judge(self, prompt: str, label: bool = False) -> Judgement:
        messages, mode = judge_messages(prompt), self._mode(label)
        try:
            reply, cached = self.fetch(messages, mode)
        except RequestFailed as exc:
            return Judgement(None, None, error=str(exc))
        return self._judgement(reply, cached, label)

    async def judge_async(self, prompt: str, label: bool = False) -> Judgement:
        """`judge` on the event loop of `judge_concurrently`."""
        messages, mode = judge_messages(prompt), self._mode(label)
        try:
            reply, cached = await self.fetch_async(messages, mode)
        except RequestFailed as exc:
            return Judgement(None, None, error=str(exc))
        return self._judgement(reply, cached, label)

    def judge_concurrently(self, tasks: Iterable[T], prompt_of: Callable[[T], tuple[str, bool]], concurrency: int,
                           stop: threading.Event | None = None) -> Iterator[tuple[T, Judgement]]:
        """Judge every task, `concurrency` requests in flight on one event loop; yield (task,
        judgement) as each finishes. `prompt_of(task)` gives its filled prompt and whether it
        asks for a label. One task's failure is its judgement's `error`; JudgeAbort ends all."""

        async def work(task: T) -> Judgement:
            prompt, label = prompt_of(task)
            try:
                return await self.judge_async(prompt, label)
            except JudgeAbort:
                raise
            except Exception as exc:  # noqa: BLE001 - one row's failure is that row's error
                return Judgement(None, None, error=f"{type(exc).__name__}: {exc}")

        return self.endpoint.run_concurrently(work, tasks, concurrency, stop)

    def _mode(self, label: bool) -> str:
        if label:
            return LABEL if self.run_mode == LOGPROB else PARSE
        return self.run_mode

    def _judgement(self, reply: Reply, cached: bool, label: bool) -> Judgement:
        if label:
            answer = label_of(reply.text)
            probability = None if answer is None else label_probability(reply, answer)
            return Judgement(None, LABEL, probability, cached=cached, raw=_raw(reply.text), label=answer,
                             top_received=None if reply.top is None else len(reply.top))
        if self.run_mode == PARSE:
            return Judgement(parse_score(reply.text).value, PARSE, None, cached=cached, raw=_raw(reply.text))
        if reply.top is None:
            return Judgement(None, LOGPROB, error="the endpoint returned no logprobs for this request",
                             raw=_raw(reply.text))
        score = weighted_score(reply.top)
        return Judgement(score.value, LOGPROB, score.mass, cached=cached, raw=_raw(reply.text),
                         top_received=len(reply.top))

    def fetch(self, messages: list[dict[str, Any]], mode: str) -> tuple[Reply, bool]:
        """The endpoint's reply, from the cache when it has it; (reply, came from cache)."""
        key = self.key(messages, mode)
        known = self._known(key, mode)
        if known is not None:
            return known
        return self._keep(key, mode, self.endpoint.complete(messages, mode)), False

    async def fetch_async(self, messages: list[dict[str, Any]], mode: str) -> tuple[Reply, bool]:
        """`fetch` on the event loop."""
        key = self.key(messages, mode)
        known = self._known(key, mode)
        if known is not None:
            return known
        return self._keep(key, mode, await self.endpoint.complete_async(messages, mode)), False

    def _known(self, key: str, mode: str) -> tuple[Reply, bool] | None:
        """The probe's reply or a cached one for `key`; None when the endpoint must be asked."""
        probe, self._probe = self._probe, None
        if probe is not None and probe[0] == key:
            return probe[1], False
        stored = self.cache.get(key)
        if stored is not None:
            self.endpoint.usage.add(cache_hits=1)
            return Reply.from_json(stored), True
        if self.offline:
            raise RequestFailed(f"no {mode} reply in the cache (the batch did not answer this request); "
                                "re-run without --batch to ask for it live")
        return None

    def _keep(self, key: str, mode: str, reply: Reply) -> Reply:
        if not (mode == LOGPROB and reply.top is None):  # a reply without logprobs is a failure: ask again
            self.cache.put(key, reply.to_json())
        return reply

    def key(self, messages: list[dict[str, Any]], mode: str) -> str:
        return cache_key(model=self.model, endpoint=self.endpoint.base_url, messages=messages, mode=mode)


def _raw(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= RAW_LIMIT else text[:RAW_LIMIT] + "…"

