"""Calling an OpenAI-compatible chat endpoint as a judge, with retries and backoff.

Works with OpenAI itself, Azure OpenAI, `em serve`, vLLM and anything else that speaks
`/v1/chat/completions`. The API key is read from an environment variable and never printed.
Transient failures (429, 5xx, 408/409, timeouts, dropped connections) are retried with
exponential backoff and jitter, honouring `Retry-After`; failures that would hit every
request alike (a bad key, an unknown model or route, no quota) stop the run at once.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from em_cli.errors import EmError, UsageError
from em_cli.judging.usage import Usage

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

DEFAULT_JUDGE_MODEL = "gpt-4o-2024-08-06"
OPENAI_BASE_URL = "https://api.openai.com/v1"
TOP_LOGPROBS = 20
PARSE_MAX_TOKENS = 8  # room for "100" and a stray full stop, not for an essay
LOGPROB, PARSE = "logprob", "parse"


class JudgeAbort(EmError):
    """A failure every request would share (bad key, unknown model, no quota): stop the run."""


class RequestFailed(Exception):
    """One request that failed for good (after its retries); the row records the message."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry transient failures `max_retries` times, waiting base·2^attempt seconds (capped at
    `max_delay`) times a random factor in [0.5, 1] so that parallel workers spread out."""

    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        if retry_after is not None and 0 <= retry_after <= self.max_delay:
            return retry_after
        ceiling = min(self.max_delay, self.base_delay * (2 ** attempt))
        return ceiling * (0.5 + 0.5 * (rng or random).random())


@dataclass(frozen=True)
class EndpointSettings:
    """Where the judge lives and how to reach it."""

    model: str = DEFAULT_JUDGE_MODEL
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else OpenAI's API
    api_key_env: str = "OPENAI_API_KEY"
    azure: bool = False  # Azure OpenAI: $AZURE_OPENAI_ENDPOINT, key from $AZURE_OPENAI_API_KEY
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def resolved_base_url(self) -> str:
        if self.azure:
            return os.environ.get("AZURE_OPENAI_ENDPOINT", "")
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")


@dataclass
class Reply:
    """A judge's answer: its text, and the first answer token's top alternatives as
    (token, logprob) — None when the endpoint returned no logprobs at all, [] when it
    returned an empty answer."""

    text: str
    top: list[tuple[str, float]] | None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "top": None if self.top is None else [list(t) for t in self.top],
                "usage": [self.prompt_tokens, self.completion_tokens]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        top = data.get("top")
        usage = data.get("usage") or [0, 0]
        return cls(text=data.get("text") or "", top=None if top is None else [(str(t), float(v)) for t, v in top],
                   prompt_tokens=int(usage[0]), completion_tokens=int(usage[1]))


def request_params(model: str, messages: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The chat-completion parameters of one judge request (docs/METHODS.md §2): one token with its
    top-20 alternatives for `logprob`, a few greedy tokens for `parse`."""
    params: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0}
    if mode == LOGPROB:
        params.update(max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)
    elif mode == PARSE:
        params.update(max_tokens=PARSE_MAX_TOKENS)
    else:
        raise ValueError(f"unknown request mode {mode!r}")
    return params


def reply_from_completion(data: dict[str, Any]) -> Reply:
    """A `Reply` from a chat-completion response body (a dict, as JSON or `model_dump()`)."""
    choices = data.get("choices") or []
    if not choices:
        raise RequestFailed("the endpoint returned no choices")
    choice = choices[0]
    text = ((choice.get("message") or {}).get("content")) or ""
    logprobs = choice.get("logprobs")
    top: list[tuple[str, float]] | None = None
    if logprobs is not None and logprobs.get("content") is not None:
        content = logprobs["content"]
        top = [(str(t["token"]), float(t["logprob"])) for t in (content[0].get("top_logprobs") or [])] \
            if content else []
    usage = data.get("usage") or {}
    return Reply(text=text, top=top, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                 completion_tokens=int(usage.get("completion_tokens") or 0))


def make_client(settings: EndpointSettings) -> openai.OpenAI:
    """An OpenAI (or Azure OpenAI) client with retries switched off: `OpenAIEndpoint` retries itself."""
    import openai

    if settings.azure:
        key_env = "AZURE_OPENAI_API_KEY" if settings.api_key_env == "OPENAI_API_KEY" else settings.api_key_env
        endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
        key = os.environ.get(key_env)
        if not endpoint or not key:
            raise UsageError(f"--azure needs AZURE_OPENAI_ENDPOINT and {key_env} in the environment",
                             hint="also set OPENAI_API_VERSION (default 2024-10-21); --judge-model is the deployment")
        version = os.environ.get("OPENAI_API_VERSION") or "2024-10-21"
        return openai.AzureOpenAI(azure_endpoint=endpoint, api_key=key, api_version=version,
                                  timeout=settings.timeout, max_retries=0)
    base_url = settings.resolved_base_url()
    key = os.environ.get(settings.api_key_env)
    if not key:
        if base_url.rstrip("/") == OPENAI_BASE_URL:
            raise UsageError(f"the judge needs an API key: ${settings.api_key_env} is not set",
                             hint=f"export {settings.api_key_env}=…, name another variable with --api-key-env, "
                                  "or judge with a local endpoint (--base-url, e.g. from `em serve`)")
        key = "none"  # local servers accept any key
    return openai.OpenAI(base_url=base_url, api_key=key, timeout=settings.timeout, max_retries=0)


class OpenAIEndpoint:
    """One judge endpoint: `complete(messages, mode)` → Reply, retrying transient failures."""

    def __init__(self, settings: EndpointSettings, usage: Usage | None = None,
                 stop: threading.Event | None = None, client: Any = None) -> None:
        self.settings = settings
        self.usage = usage or Usage()
        self.stop = stop or threading.Event()
        self.client = client or make_client(settings)
        self.base_url = settings.resolved_base_url()
        self.backend = "azure" if settings.azure else "openai"

    def complete(self, messages: list[dict[str, Any]], mode: str) -> Reply:
        """Ask once (plus retries). Raises RequestFailed, or JudgeAbort for run-wide failures."""
        policy = self.settings.retry
        params = request_params(self.settings.model, messages, mode)
        attempt = 0
        while True:
            if self.stop.is_set():
                raise RequestFailed("stopped before the request was answered")
            self.usage.add(requests=1)
            try:
                completion = self.client.chat.completions.create(**params)
                reply = reply_from_completion(completion.model_dump())
                self.usage.add(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
                return reply
            except RequestFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted into retry / fail / abort below
                verdict, message = classify_error(exc)
                if verdict == "abort":
                    raise JudgeAbort(message, hint=_abort_hint(exc)) from None
                if verdict == "fail" or attempt >= policy.max_retries:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise RequestFailed(f"{message}{tries}") from None
                wait = policy.delay(attempt, _retry_after(exc))
                log.debug("retrying in %.2fs after %s", wait, message)
                self.usage.add(retries=1)
                attempt += 1
                if self.stop.wait(wait):
                    raise RequestFailed(f"stopped while waiting to retry after {message}") from None


def classify_error(exc: BaseException) -> tuple[str, str]:
    """('retry' | 'fail' | 'abort', a one-line message) for an exception from the client."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = f"HTTP {status}: {_short(_status_message(exc))}"
        code = getattr(exc, "code", None)
        if status in (401, 403) or (status == 429 and code == "insufficient_quota"):
            return "abort", message
        if status == 404:
            return "abort", message
        if status in (408, 409, 429) or status >= 500:
            return "retry", message
        return "fail", message
    if isinstance(exc, openai.APITimeoutError):
        return "retry", "the request timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "retry", f"connection error: {_short(str(exc.__cause__ or exc))}"
    return "fail", f"{type(exc).__name__}: {_short(str(exc))}"


def _status_message(exc: BaseException) -> str:
    """The server's own words: the error body's message, without the client's "Error code" prefix."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        if isinstance(inner.get("message"), str):
            return inner["message"]
    text = getattr(exc, "message", None) or str(exc)
    return re.sub(r"^Error code: \d+ - ", "", text)


def _abort_hint(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return "check the API key (--api-key-env names the variable that holds it)"
    if status == 404:
        return "check --judge-model and --base-url (an OpenAI-compatible base URL usually ends in /v1)"
    return "check the account's quota and billing"


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        return float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
