"""One client for OpenAI-compatible chat endpoints: judging, dataset synthesis and any other caller.

Works with OpenAI itself, Azure OpenAI, `em serve`, vLLM, llama.cpp's server and anything else
that speaks `/v1/chat/completions`. The API key is read from an environment variable and never
printed. `check()` asks the endpoint once, before any work, whether it can be reached with the
key it was given (and which models it serves). Transient failures (429, 5xx, 408/409,
timeouts, dropped connections) are retried with exponential backoff and jitter, honouring
`Retry-After`; failures that would hit every request alike (a bad key, an unknown model or
route, no quota) stop the run at once (`EndpointAbort`). `Usage` is the one record of what
calls cost.

Many requests at once (`Endpoint.run_concurrently`) go through one asyncio event loop in
the calling thread, at most `concurrency` in flight: a thread per request spent much of its
time handing the interpreter lock around, which made 32 requests in flight barely faster
than 8. Requests go in turn to ⌈concurrency / POOL_CONNECTIONS⌉ HTTP clients, each with its
own connection pool: the HTTP client scans its whole pool for every request it sends, so one
pool of 64 connections costs as much CPU per request as the rest of the request does. On that
path a request is a plain POST through the SDK's own HTTP client class, with the SDK's headers,
its JSON parsed here (`_ChatPoster`): the SDK's typed request and response objects cost more CPU
than the HTTP exchange itself, and CPU per request is what limits many requests in flight.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from em_cli.errors import EmError, UsageError

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
STOP_POLL = 0.05  # seconds between looks at the stop event while the event loop waits
POOL_CONNECTIONS = 16  # requests in flight per async client (connection pool), on average
T = TypeVar("T")
R = TypeVar("R")


class EndpointAbort(EmError):
    """A failure every request would share (bad key, unknown model, no quota): stop the run."""


class RequestFailed(Exception):
    """One request that failed for good (after its retries); the caller records the message."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Usage:
    """What a run's calls cost: requests, retries, cache hits, tokens and (given prices) money.
    Shared by the threads of one run (`add` is thread-safe)."""

    requests: int = 0  # HTTP requests sent (or local forward passes), retries included
    retries: int = 0
    cache_hits: int = 0
    failed: int = 0  # calls (or judgements) that ended in an error after all retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
    without_usage: int = 0  # answers that reported no token counts
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + int(value))

    def cost(self, price_in: float | None, price_out: float | None) -> float | None:
        """Dollars at `price_in` / `price_out` per million prompt / completion tokens."""
        if price_in is None and price_out is None:
            return None
        return (self.prompt_tokens * (price_in or 0.0) + self.completion_tokens * (price_out or 0.0)) / 1e6

    def to_dict(self, price_in: float | None = None, price_out: float | None = None) -> dict[str, Any]:
        cost = self.cost(price_in, price_out)
        return {"requests": self.requests, "retries": self.retries, "cache_hits": self.cache_hits,
                "failed": self.failed, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "without_usage": self.without_usage,
                "cost_usd": None if cost is None else round(cost, 6),
                "price_in_per_1m": price_in, "price_out_per_1m": price_out}

    def describe(self, price_in: float | None = None, price_out: float | None = None) -> str:
        """One line for stderr."""
        text = (f"{self.requests} requests ({self.retries} retries), {self.cache_hits} cache hits, "
                f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens")
        cost = self.cost(price_in, price_out)
        if cost is not None:
            text += f", cost ${cost:.4f}"
        return text


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
    """Where the endpoint lives and how to reach it."""

    model: str
    base_url: str | None = None  # None: $OPENAI_BASE_URL, else OpenAI's API
    api_key_env: str = "OPENAI_API_KEY"
    azure: bool = False  # Azure OpenAI: $AZURE_OPENAI_ENDPOINT, key from $AZURE_OPENAI_API_KEY
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def resolved_base_url(self) -> str:
        if self.azure:
            return os.environ.get("AZURE_OPENAI_ENDPOINT", "")
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL).rstrip("/")


def make_client(settings: EndpointSettings, asynchronous: bool = False, http_client: Any = None) -> Any:
    """An OpenAI (or Azure OpenAI) client — `openai.AsyncOpenAI` when `asynchronous` — with the
    client's own retries off (`Endpoint` retries), on `http_client` when given. A missing key is
    refused here, before any work, when the endpoint is OpenAI's."""
    import openai

    http = {} if http_client is None else {"http_client": http_client}

    if settings.azure:
        key_env = "AZURE_OPENAI_API_KEY" if settings.api_key_env == "OPENAI_API_KEY" else settings.api_key_env
        endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
        key = os.environ.get(key_env)
        if not endpoint or not key:
            raise UsageError(f"--azure needs AZURE_OPENAI_ENDPOINT and {key_env} in the environment",
                             hint="also set OPENAI_API_VERSION (default 2024-10-21); the model names the deployment")
        version = os.environ.get("OPENAI_API_VERSION") or "2024-10-21"
        azure = openai.AsyncAzureOpenAI if asynchronous else openai.AzureOpenAI
        return azure(azure_endpoint=endpoint, api_key=key, api_version=version, timeout=settings.timeout,
                     max_retries=0, **http)
    base_url = settings.resolved_base_url()
    key = os.environ.get(settings.api_key_env)
    if not key:
        if base_url.rstrip("/") == OPENAI_BASE_URL:
            raise UsageError(f"this needs an API key: ${settings.api_key_env} is not set",
                             hint=f"export {settings.api_key_env}=…, name another variable with --api-key-env, "
                                  "or use a local endpoint (--base-url, e.g. from `em serve`)")
        key = "none"  # local servers accept any key
    plain = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return plain(base_url=base_url, api_key=key, timeout=settings.timeout, max_retries=0, **http)


@dataclass(frozen=True)
class EndpointCheck:
    """What the up-front check learnt: the models the endpoint lists (None: it lists none)."""

    base_url: str
    models: list[str] | None


class Endpoint:
    """One OpenAI-compatible endpoint: `chat(params)` → the completion as a dict, with retries;
    `chat_async` the same inside `run_concurrently`.

    `client` replaces the synchronous client (tests pass fakes); `chat_async` then calls `chat`
    in a worker thread."""

    def __init__(self, settings: EndpointSettings, usage: Usage | None = None,
                 stop: threading.Event | None = None, client: Any = None) -> None:
        self.settings = settings
        self.usage = usage or Usage()
        self.stop = stop or threading.Event()
        self.client = client or make_client(settings)
        self._custom_client = client is not None
        self._posters: list[_ChatPoster] = []  # one per connection pool (made by run_concurrently)
        self._sent = 0
        self.base_url = settings.resolved_base_url()
        self.backend = "azure" if settings.azure else "openai"

    def check(self) -> EndpointCheck:
        """Reach the endpoint once (its model list) before any work: an unreachable server or
        a refused key is one `Error:` line now instead of a failure per row later. Servers
        without a model list pass."""
        import openai

        try:
            listed = [str(m.id) for m in self.client.models.list()]
        except openai.APIConnectionError as exc:
            raise EndpointAbort(f"cannot reach the endpoint at {self.base_url} "
                             f"({_short(str(exc.__cause__ or exc))})",
                             hint="is the server running? check --base-url (an OpenAI-compatible URL "
                                  "usually ends in /v1)") from None
        except openai.APIStatusError as exc:
            if exc.status_code in (401, 403):
                raise EndpointAbort(f"the endpoint at {self.base_url} refused the API key "
                                    f"(HTTP {exc.status_code})", hint=_abort_hint(exc)) from None
            return EndpointCheck(self.base_url, None)  # no model list here; requests will tell
        except Exception:  # noqa: BLE001 - an odd model list is not a reason to stop
            return EndpointCheck(self.base_url, None)
        return EndpointCheck(self.base_url, listed)

    def chat(self, params: dict[str, Any]) -> dict[str, Any]:
        """One chat completion (plus retries) as a plain dict. Raises RequestFailed, or
        EndpointAbort for failures every request would share."""
        attempt = 0
        while True:
            self._starting()
            try:
                return self._answered(self.client.chat.completions.create(**params).model_dump())
            except Exception as exc:  # noqa: BLE001 - sorted into retry / fail / abort by _retry_wait
                wait, message = self._retry_wait(exc, attempt)
            attempt += 1
            if self.stop.wait(wait):
                raise RequestFailed(f"stopped while waiting to retry after {message}")

    async def chat_async(self, params: dict[str, Any]) -> dict[str, Any]:
        """`chat` for the event loop of `run_concurrently`: the same retries, waits and usage."""
        if self._custom_client:
            return await asyncio.to_thread(self.chat, params)
        poster = self._next_poster()
        attempt = 0
        while True:
            self._starting()
            try:
                return self._answered(await poster.post(params))
            except Exception as exc:  # noqa: BLE001 - sorted into retry / fail / abort by _retry_wait
                wait, message = self._retry_wait(exc, attempt)
            attempt += 1
            if await _stopped_within(self.stop, wait):
                raise RequestFailed(f"stopped while waiting to retry after {message}")

    def run_concurrently(self, work: Callable[[T], Awaitable[R]], items: Iterable[T], concurrency: int,
                         stop: threading.Event | None = None) -> Iterator[tuple[T, R]]:
        """Run `await work(item)` for every item, at most `concurrency` at once, on one event loop;
        yield (item, result) as each finishes.

        The loop runs in the calling thread, only while this generator waits for results: one
        thread, so no time goes on handing the interpreter lock between threads, and Ctrl-C
        arrives as usual. Items are taken from `items` only as slots free up. An exception from
        `work` stops the rest and is raised here. Setting `self.stop` or `stop`, or leaving the
        loop over the results early (an exception, Ctrl-C), cancels what is in flight.

            for prompt, data in endpoint.run_concurrently(ask, prompts, 32): ...
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UsageError("concurrent requests cannot start inside a running event loop (a notebook's, say)",
                             hint="call this from a worker thread, e.g. `await asyncio.to_thread(...)`")
        stops = [self.stop] + ([stop] if stop is not None else [])
        batch = _Batch(work, items, max(1, concurrency), stops)
        if not self._custom_client:  # the clients are made here, not on the loop while requests wait
            self._posters = _ChatPoster.several(self.settings, -(-max(1, concurrency) // POOL_CONNECTIONS))
        loop = asyncio.new_event_loop()
        try:
            feeder = loop.create_task(batch.feed())
            while True:
                finished = loop.run_until_complete(batch.next_results(feeder))
                yield from finished
                if batch.failure:
                    raise batch.failure[0]
                if not finished:  # all done, or a stop was asked for
                    return
        finally:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(self.aclose())
            loop.close()

    async def aclose(self) -> None:
        """Close the async clients (inside the loop that used them)."""
        posters, self._posters = self._posters, []
        await asyncio.gather(*(poster.close() for poster in posters), return_exceptions=True)

    def _next_poster(self) -> _ChatPoster:
        """The connection pools in turn (one made here if `run_concurrently` made none)."""
        if not self._posters:
            self._posters = _ChatPoster.several(self.settings, 1)
        self._sent += 1
        return self._posters[self._sent % len(self._posters)]

    def _starting(self) -> None:
        if self.stop.is_set():
            raise RequestFailed("stopped before the request was answered")
        self.usage.add(requests=1)

    def _answered(self, data: dict[str, Any]) -> dict[str, Any]:
        usage = data.get("usage") or {}
        if usage:
            self.usage.add(prompt_tokens=int(usage.get("prompt_tokens") or 0),
                           completion_tokens=int(usage.get("completion_tokens") or 0))
        else:
            self.usage.add(without_usage=1)
        return data

    def _retry_wait(self, exc: Exception, attempt: int) -> tuple[float, str]:
        """How long to wait before retrying after `exc` (and its message); raises EndpointAbort
        or RequestFailed when it is not worth retrying."""
        verdict, message = classify_error(exc)
        if verdict == "abort":
            raise EndpointAbort(message, hint=_abort_hint(exc)) from None
        policy = self.settings.retry
        if verdict == "fail" or attempt >= policy.max_retries:
            tries = f" (after {attempt + 1} attempts)" if attempt else ""
            raise RequestFailed(f"{message}{tries}", getattr(exc, "status_code", None)) from None
        wait = policy.delay(attempt, _retry_after(exc))
        log.debug("retrying in %.2fs after %s", wait, message)
        self.usage.add(retries=1)
        return wait, message


class _ChatPoster:
    """Chat completions POSTed on one connection pool of the event loop's path, the reply's JSON
    parsed here; failures raised as the SDK's own exceptions, so `classify_error` and
    `_retry_after` treat them as on the synchronous path.

    A plain endpoint gets the POST straight through the SDK's HTTP client class
    (`openai.DefaultAsyncHttpxClient`) with the headers the SDK would send; Azure, whose URLs
    and query the SDK builds per deployment, goes through the SDK's own `post`."""

    def __init__(self, settings: EndpointSettings, ssl_context: Any) -> None:
        import openai

        http = openai.DefaultAsyncHttpxClient(verify=ssl_context) if ssl_context is not None else None
        self.sdk = make_client(settings, asynchronous=True, http_client=http)
        self.http = None if settings.azure else http
        self.library = _http_library()
        if self.http is not None:
            self.url = str(self.sdk.base_url).rstrip("/") + "/chat/completions"
            headers = {name: value for name, value in self.sdk.default_headers.items() if isinstance(value, str)}
            self.headers = {**headers, "Authorization": f"Bearer {self.sdk.api_key}"}
            self.timeout = settings.timeout

    @classmethod
    def several(cls, settings: EndpointSettings, count: int) -> list[_ChatPoster]:
        """`count` pools sharing one TLS context (making one per client costs 40 ms each)."""
        make_context = getattr(_http_library(), "create_ssl_context", None)
        context = make_context() if make_context is not None else None
        return [cls(settings, context) for _ in range(count)]

    async def post(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.http is None:
            return json.loads(await self.sdk.post("/chat/completions", body=params, cast_to=str))
        import openai

        library = self.library
        try:
            response = await self.http.post(self.url, content=json.dumps(params).encode(), headers=self.headers,
                                            timeout=self.timeout)
        except library.TimeoutException as exc:
            raise openai.APITimeoutError(request=exc.request) from exc
        except library.TransportError as exc:
            raise openai.APIConnectionError(request=exc.request) from exc
        if response.status_code >= 400:
            try:
                body: Any = json.loads(response.content)
            except ValueError:
                body = response.text
            error = body.get("error", body) if isinstance(body, dict) else body
            raise openai.APIStatusError(f"Error code: {response.status_code} - {body}", response=response,
                                        body=error)
        return json.loads(response.content)

    async def close(self) -> None:
        await self.sdk.close()


@functools.cache
def _http_library() -> Any:
    """The HTTP library the OpenAI SDK is built on (httpx; httpx2 from openai 3 on)."""
    import importlib

    import openai

    return importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__.partition(".")[0])


class _Batch:
    """The work of one `Endpoint.run_concurrently`: `feed` starts a task per item as slots free
    up; `next_results` waits until some have finished (or a stop is asked for)."""

    def __init__(self, work: Callable[[Any], Awaitable[Any]], items: Iterable[Any], concurrency: int,
                 stops: list[threading.Event]) -> None:
        self.work = work
        self.items = iter(items)
        self.slots = asyncio.Semaphore(concurrency)
        self.stops = stops
        self.running: set[asyncio.Task] = set()
        self.results: list[tuple[Any, Any]] = []
        self.failure: list[BaseException] = []
        self.ready = asyncio.Event()

    def stopping(self) -> bool:
        return bool(self.failure) or any(event.is_set() for event in self.stops)

    async def feed(self) -> None:
        for item in self.items:
            await self.slots.acquire()
            if self.stopping():
                return
            task = asyncio.create_task(self._one(item))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _one(self, item: Any) -> None:
        try:
            result = await self.work(item)
            self.results.append((item, result))  # after the await: `results` is swapped for a new list meanwhile
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - ends the run; raised by run_concurrently
            self.failure.append(exc)
        finally:
            self.slots.release()
            self.ready.set()

    async def next_results(self, feeder: asyncio.Task) -> list[tuple[Any, Any]]:
        """What has finished since the last call; waits for something to finish, looking at the
        stop events every STOP_POLL seconds. Empty when all is done or a stop was asked for."""
        while not self.results and not self.failure and not (feeder.done() and not self.running):
            if self.stopping():
                return []
            self.ready.clear()
            try:
                await asyncio.wait_for(self.ready.wait(), STOP_POLL)
            except asyncio.TimeoutError:
                pass
        finished, self.results = self.results, []
        return finished


async def _stopped_within(stop: threading.Event, seconds: float) -> bool:
    """Sleep `seconds` unless `stop` is set first; whether it was."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not stop.is_set():
        left = end - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(left, STOP_POLL))
    return True


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
        return "check the model name and --base-url (an OpenAI-compatible base URL usually ends in /v1)"
    return "check the account's quota and billing"


def _retry_after(exc: BaseException) -> float | None:
    """The server's requested wait in seconds: `retry-after-ms`, else `Retry-After` (seconds or
    an HTTP date); None when it names none."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        return float(headers.get("retry-after-ms")) / 1000
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
