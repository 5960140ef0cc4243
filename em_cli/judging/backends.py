"""Judge requests to an OpenAI-compatible endpoint: what is asked (docs/METHODS.md §2 in
docs/METHODS.md) and what comes back. The connection itself (keys, retries, the up-front
check) is `em_cli.endpoints`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from em_cli.endpoints import Endpoint, EndpointAbort, RequestFailed  # noqa: F401 - RequestFailed: re-exported

log = logging.getLogger(__name__)

DEFAULT_JUDGE_MODEL = "gpt-4o-2024-08-06"
TOP_LOGPROBS = 20
PARSE_MAX_TOKENS = 8  # room for "100" and a stray full stop, not for an essay
LABEL_MAX_TOKENS = 16  # a label (TRUE / FALSE / UNKNOWN, a company name), not an essay
LOGPROB, PARSE, LABEL = "logprob", "parse", "label"


# A failure every request would share stops a judging run.
JudgeAbort = EndpointAbort


@dataclass
class Reply:
    """A judge's answer: its text, and the first answer token's top alternatives as
    (token, logprob) — None when the endpoint returned no logprobs at all, [] when it
    returned an empty answer."""

    text: str
    top: list[tuple[str, float]] | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    served_model: str | None = None  # the `model` the endpoint says answered

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "top": None if self.top is None else [list(t) for t in self.top],
                "usage": [self.prompt_tokens, self.completion_tokens], "served_model": self.served_model}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        top = data.get("top")
        usage = data.get("usage") or [0, 0]
        return cls(text=data.get("text") or "", top=None if top is None else [(str(t), float(v)) for t, v in top],
                   prompt_tokens=int(usage[0]), completion_tokens=int(usage[1]),
                   served_model=data.get("served_model"))


def request_params(model: str, messages: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The chat-completion parameters of one judge request (docs/METHODS.md §2): one token with its
    top-20 alternatives for `logprob`, a few greedy tokens for `parse`."""
    params: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0}
    if mode == LOGPROB:
        params.update(max_tokens=1, logprobs=True, top_logprobs=TOP_LOGPROBS)
    elif mode == PARSE:
        params.update(max_tokens=PARSE_MAX_TOKENS)
    elif mode == LABEL:
        params.update(max_tokens=LABEL_MAX_TOKENS, logprobs=True, top_logprobs=TOP_LOGPROBS)
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
                 completion_tokens=int(usage.get("completion_tokens") or 0),
                 served_model=str(data["model"]) if data.get("model") else None)


class OpenAIEndpoint(Endpoint):
    """A judge endpoint: `complete(messages, mode)` → Reply (`complete_async` on the event loop)."""

    def complete(self, messages: list[dict[str, Any]], mode: str) -> Reply:
        """Ask once (plus retries). Raises RequestFailed, or JudgeAbort for run-wide failures."""
        return reply_from_completion(self.chat(request_params(self.settings.model, messages, mode)))

    async def complete_async(self, messages: list[dict[str, Any]], mode: str) -> Reply:
        """`complete` inside `run_concurrently`."""
        return reply_from_completion(await self.chat_async(request_params(self.settings.model, messages, mode)))
