"""An OpenAI-compatible chat endpoint over the generation engine (`em serve`).

Implements `GET /v1/models` and non-streaming `POST /v1/chat/completions` with `n`,
`max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `seed`, `stop`,
`logprobs` and `top_logprobs` (≤ 20). Log-probabilities are those of the model's raw
next-token distribution (before temperature and top-p), as the judge needs; when the model
ends its turn, the end-of-turn token is listed too (with its alternatives), though it is not
part of the content. Requests are
served one at a time (one model, one lock); the HTTP layer is the standard library's.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from em_cli.models.chat import render_prompt
from em_cli.generation import Completion, SamplingSettings, row_seed, sample

if TYPE_CHECKING:
    from em_cli.models.loading import LoadedModel

MAX_TOP_LOGPROBS = 20


class RequestError(Exception):
    """A bad request: answered with HTTP 400 and an OpenAI-style error body."""


class UnknownModel(RequestError):
    """A request for a model this server does not serve: HTTP 404, as OpenAI answers. Answering
    it with another model would put the wrong judge's name on every score."""


@dataclass
class ChatService:
    loaded: LoadedModel
    name: str
    default_max_tokens: int = 512
    max_batch: int = 8
    created: int = field(default_factory=lambda: int(time.time()))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": self.created,
                                            "owned_by": "em"}]}

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        requested = body.get("model")
        if requested is not None and requested != self.name:
            raise UnknownModel(f"model {requested!r} is not served here; this server serves {self.name!r} "
                               f"(ask for model {self.name!r})")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("`messages` must be a non-empty list")
        for message in messages:
            if not isinstance(message, dict) or "role" not in message:
                raise RequestError("each message needs a `role` and `content`")
            if not isinstance(message.get("content"), str):
                raise RequestError("only string message content is supported")
        n = _int(body, "n", 1, 1, 128)
        max_tokens = _int(body, "max_completion_tokens", None, 1, 32768)
        max_tokens = max_tokens or _int(body, "max_tokens", self.default_max_tokens, 1, 32768)
        temperature = _float(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _float(body, "top_p", 1.0, 0.0, 1.0)
        # Not in OpenAI's API; vLLM and SGLang take it as an extra field, and so does `em serve`.
        repetition_penalty = _float(body, "repetition_penalty", 1.0, 0.01, 10.0)
        want_logprobs = bool(body.get("logprobs") or False)
        top_k = _int(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS) if want_logprobs else None
        if body.get("top_logprobs") and not want_logprobs:
            raise RequestError("`top_logprobs` requires `logprobs: true`")
        if body.get("stream"):
            raise RequestError("streaming is not supported; send stream: false")
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        seed = body.get("seed")
        seed = secrets.randbits(62) if seed is None else int(seed)
        settings = SamplingSettings(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                    repetition_penalty=repetition_penalty)
        try:
            prompt = render_prompt(self.loaded.tokenizer, messages)
        except Exception as exc:  # template errors (e.g. roles it does not allow)
            raise RequestError(f"the chat template rejected these messages: {exc}") from None
        completions: list[Completion] = []
        with self._lock:
            for start in range(0, n, self.max_batch):
                count = min(self.max_batch, n - start)
                seeds = [row_seed(seed, i) for i in range(start, start + count)]
                completions += sample(self.loaded.model, self.loaded.tokenizer, [prompt] * count, seeds, settings,
                                      top_logprobs=top_k)
        choices = [self._choice(i, c, stops) for i, c in enumerate(completions)]
        completion_tokens = sum(len(c.token_ids) for c in completions)
        prompt_tokens = completions[0].prompt_tokens
        return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name, "system_fingerprint": self.loaded.info.fingerprint[:16], "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def _choice(self, index: int, completion: Completion, stops: list[str]) -> dict[str, Any]:
        text, reason = completion.text, completion.finish_reason
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            text, reason = text[:cut], "stop"
        logprobs = None
        if completion.logprobs is not None:
            logprobs = {"content": [
                {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token.encode()),
                 "top_logprobs": [{"token": tok, "logprob": value, "bytes": list(tok.encode())}
                                  for _, tok, value in lp.top]}
                for lp in completion.logprobs]}
        return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                "logprobs": logprobs}


def _int(body: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"`{key}` must be an integer in [{low}, {high}]")
    return value


def _float(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"`{key}` must be a number in [{low}, {high}]")
    return float(value)


def make_server(service: ChatService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server bound to (host, port); port 0 picks a free one (see server_address)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as separate writes; without this each response waits for
        # the client's delayed ACK (~40 ms a request).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI logs requests itself
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, service.models())
            elif self.path.rstrip("/") in ("", "/health"):
                self._send(200, {"status": "ok", "model": service.name})
            else:
                self._send(404, _error(f"no route {self.path}", "not_found"))

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(404, _error(f"no route {self.path}", "not_found"))
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise RequestError("the request body must be a JSON object")
                self._send(200, service.chat_completion(body))
            except UnknownModel as exc:
                self._send(404, _error(str(exc), "model_not_found"))
            except (RequestError, ValueError) as exc:
                self._send(400, _error(str(exc), "invalid_request_error"))
            except Exception as exc:  # noqa: BLE001 - a server must answer, not die
                self._send(500, _error(f"{type(exc).__name__}: {exc}", "server_error"))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            send_json(self, status, payload)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    """Answer an http.server request with a JSON body."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
