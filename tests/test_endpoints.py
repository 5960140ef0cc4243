"""The endpoint client's concurrent path (`Endpoint.run_concurrently`, `chat_async`) and judging
through it, against a small local OpenAI-compatible server (no model): every answer's top
logprobs follow from the prompt, so scores can be compared between runs."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
from em_cli.endpoints import Endpoint, EndpointAbort, EndpointSettings, RequestFailed, RetryPolicy, Usage, _retry_after
from em_cli.judging.backends import OpenAIEndpoint
from em_cli.judging.cache import JudgeCache
from em_cli.judging.judges import EndpointJudge
from em_cli.judging.runner import JudgeIdentity, judge_rows, load_rows

pytest.importorskip("openai")
IDENTITY = JudgeIdentity("fake-judge", "openai")


class FakeJudgeServer:
    """Answers chat completions with top logprobs that depend on the prompt, after `delay`
    seconds. `faults[content]` lists (status, headers) answers given before the real one;
    prompts containing `hold` wait until `release` is set. Records when each request came."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.faults: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.hold: str | None = None
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.arrivals: list[tuple[str, float]] = []
        self.headers: list[dict[str, str]] = []  # each POST's request headers
        self.in_flight = 0
        self.most_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._send(200, {"object": "list", "data": [{"id": "fake-judge", "object": "model"}]})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                content = body["messages"][-1]["content"]
                with server.lock:
                    server.arrivals.append((content, time.monotonic()))
                    server.headers.append(dict(self.headers.items()))
                    fault = server.faults.get(content, [])
                    status, headers = fault.pop(0) if fault else (200, {})
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    if server.hold and server.hold in content:
                        server.release.wait(10)
                    time.sleep(server.delay)
                    if status != 200:
                        self._send(status, {"error": {"message": f"injected {status}", "type": "x"}}, headers)
                    else:
                        self._send(200, answer(content, body["model"]))
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (an interrupted run)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.http = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/v1" % self.http.server_address[1]

    def requests_for(self, content: str) -> list[float]:
        with self.lock:
            return [when for text, when in self.arrivals if text == content]


def answer(content: str, model: str) -> dict:
    """A completion whose top logprobs (hence score) follow from the prompt."""
    digest = hashlib.sha256(content.encode()).digest()
    first, second = str(10 + digest[0] % 80), str(5 + digest[1] % 90)
    top = [{"token": first, "logprob": -0.2, "bytes": None}, {"token": second, "logprob": -1.8, "bytes": None},
           {"token": "REFUSAL", "logprob": -4.0, "bytes": None}]
    return {"id": "c", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": first},
                         "logprobs": {"content": [{"token": first, "logprob": -0.2, "bytes": None,
                                                   "top_logprobs": top}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}}


@pytest.fixture
def server():
    fake = FakeJudgeServer()
    yield fake
    fake.release.set()
    fake.http.shutdown()


def settings(url: str, max_retries: int = 3) -> EndpointSettings:
    return EndpointSettings(model="fake-judge", base_url=url, timeout=10,
                            retry=RetryPolicy(max_retries=max_retries, base_delay=0.001, max_delay=1.0))


def make_judge(url: str, cache: Path | None, usage: Usage | None = None) -> EndpointJudge:
    return EndpointJudge(OpenAIEndpoint(settings(url), usage or Usage()), JudgeCache(cache), "logprob",
                         warn=lambda message: None)


def responses(path: Path, count: int) -> Path:
    write_jsonl(path, [{"id": f"q/0/{i}", "question_id": "q", "question": "How are you?",
                        "response": f"Answer number {i}."} for i in range(count)])
    return path


def test_judging_at_concurrency_32_gives_the_same_records_as_one_at_a_time(server, tmp_path):
    server.delay = 0.02
    path = responses(tmp_path / "r.jsonl", 40)
    serial = judge_rows(load_rows(path, ["aligned", "coherent"]), tmp_path / "one.jsonl", IDENTITY,
                        lambda: make_judge(server.url, tmp_path / "cache-one"), concurrency=1)
    assert server.most_in_flight == 1
    server.most_in_flight = 0
    usage = Usage()
    wide = judge_rows(load_rows(path, ["aligned", "coherent"]), tmp_path / "wide.jsonl", IDENTITY,
                      lambda: make_judge(server.url, tmp_path / "cache-wide", usage), concurrency=32, usage=usage)
    assert server.most_in_flight > 8  # the requests really were in flight together
    assert (serial.failed, wide.failed, wide.judged) == (0, 0, 80)
    one, many = read_jsonl(tmp_path / "one.jsonl"), read_jsonl(tmp_path / "wide.jsonl")
    assert [r["id"] for r in many] == [f"q/0/{i}" for i in range(40)]  # input order
    assert many == one
    assert len({r["aligned"] for r in many}) > 5  # the scores differ between rows
    assert (usage.requests, usage.retries, usage.prompt_tokens, usage.completion_tokens) == (80, 0, 1600, 80)


def test_a_429_with_retry_after_is_waited_out_and_the_row_scored(server, tmp_path):
    path = responses(tmp_path / "r.jsonl", 3)
    rows = load_rows(path, ["aligned"])
    target = rows[1].filled(rows[1].metrics[0])
    server.faults[target] = [(429, {"Retry-After": "0.2"})]
    usage = Usage()
    run = judge_rows(rows, tmp_path / "out.jsonl", IDENTITY, lambda: make_judge(server.url, None, usage),
                     concurrency=4, usage=usage)
    assert run.failed == 0
    first, second = server.requests_for(target)
    assert second - first >= 0.2  # the policy alone would have waited about a millisecond
    assert read_jsonl(tmp_path / "out.jsonl")[1]["aligned"] is not None
    assert usage.retries == 1


def test_retry_after_in_the_synchronous_path_too(server):
    server.faults["hi"] = [(503, {"Retry-After": "0.2"})]
    endpoint = Endpoint(settings(server.url))
    start = time.monotonic()
    data = endpoint.chat({"model": "fake-judge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert time.monotonic() - start >= 0.2 and data["choices"]
    assert (endpoint.usage.requests, endpoint.usage.retries) == (2, 1)


def test_retry_after_forms():
    def of(**headers):
        return _retry_after(SimpleNamespace(response=SimpleNamespace(headers=headers)))

    assert of(**{"retry-after": "1.5"}) == 1.5
    assert of(**{"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 5 <= of(**{"retry-after": formatdate(time.time() + 10, usegmt=True)}) <= 11
    assert of(**{"retry-after": "soon"}) is None and of() is None


def test_an_interrupt_mid_run_keeps_the_finished_rows(server, tmp_path):
    """Ctrl-C while requests hang: the call ends at once, finished rows stay in OUTPUT.partial,
    and a re-run asks only for the rest."""
    path = responses(tmp_path / "r.jsonl", 12)
    server.hold = "Answer number 1"  # rows 1 and 10, 11 hang until released
    out = tmp_path / "out.jsonl"
    seen = []

    def progress(count: int) -> None:
        seen.append(count)
        if len(seen) == 6:
            raise KeyboardInterrupt

    stop = threading.Event()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        judge_rows(load_rows(path, ["aligned"]), out, IDENTITY, lambda: make_judge(server.url, tmp_path / "cache"),
                   concurrency=4, on_progress=progress, stop=stop)
    assert time.monotonic() - start < 5  # in-flight requests were given up, not waited for
    assert stop.is_set()
    kept = read_jsonl(out.with_name(out.name + ".partial"))
    assert len(kept) >= 6 and all(r["aligned"] is not None for r in kept)
    assert "q/0/1" not in {r["id"] for r in kept}
    server.release.set()
    before = len(server.arrivals)
    rerun = judge_rows(load_rows(path, ["aligned"]), out, IDENTITY, lambda: make_judge(server.url, tmp_path / "cache"),
                       concurrency=4)
    assert rerun.reused == len(kept) and rerun.failed == 0
    assert len(server.arrivals) - before <= 1 + 12 - len(kept)  # the probe and the rows still missing
    assert [r["id"] for r in read_jsonl(out)] == [f"q/0/{i}" for i in range(12)]


def test_run_concurrently_yields_every_result_and_raises_a_failure(server):
    endpoint = Endpoint(settings(server.url))

    async def double(item: int) -> int:
        return 2 * item

    assert sorted(endpoint.run_concurrently(double, range(50), 8)) == [(i, 2 * i) for i in range(50)]

    async def abort(item: int) -> int:
        if item == 3:
            raise EndpointAbort("every request would fail")
        return item

    with pytest.raises(EndpointAbort, match="every request would fail"):
        list(endpoint.run_concurrently(abort, range(10), 2))


def test_a_set_stop_ends_the_async_requests(server):
    server.faults["x"] = [(500, {"Retry-After": "5"})]
    stop = threading.Event()
    patient = EndpointSettings(model="fake-judge", base_url=server.url, retry=RetryPolicy(max_delay=10))
    endpoint = Endpoint(patient, stop=stop)

    async def ask(item: str) -> object:
        try:
            return await endpoint.chat_async({"model": "fake-judge", "messages": [{"role": "user", "content": item}]})
        except RequestFailed as exc:
            return str(exc)

    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    results = dict(endpoint.run_concurrently(ask, ["x"], 1))
    assert time.monotonic() - start < 3
    assert results in ({}, {"x": "stopped while waiting to retry after HTTP 500: injected 500"})


def test_many_requests_in_flight_are_spread_over_several_connection_pools(server, monkeypatch):
    import em_cli.endpoints as endpoints

    made = []
    real = endpoints.make_client

    def counting(settings_, asynchronous=False, **kwargs):
        client = real(settings_, asynchronous, **kwargs)
        if asynchronous:
            made.append(client)
        return client

    monkeypatch.setattr(endpoints, "make_client", counting)
    endpoint = Endpoint(settings(server.url))

    async def ask(item: int) -> str:
        data = await endpoint.chat_async({"model": "fake-judge", "messages": [{"role": "user", "content": f"q{item}"}]})
        return data["choices"][0]["message"]["content"]

    answers = dict(endpoint.run_concurrently(ask, range(3 * endpoints.POOL_CONNECTIONS), 2 * endpoints.POOL_CONNECTIONS + 1))
    assert len(answers) == 3 * endpoints.POOL_CONNECTIONS and all(answers.values())
    assert len(made) == 3  # one pool per POOL_CONNECTIONS in flight, rounded up; each closed at the end
    assert all(client.is_closed() for client in made)
    assert endpoint.usage.requests == 3 * endpoints.POOL_CONNECTIONS


def ask_all(endpoint: Endpoint, contents: list[str], concurrency: int = 4) -> dict[str, object]:
    """Each content's answer text through the event loop's path, or its RequestFailed message."""

    async def ask(content: str) -> object:
        try:
            data = await endpoint.chat_async({"model": "fake-judge", "messages": [{"role": "user", "content": content}]})
        except RequestFailed as exc:
            return f"failed: {exc}"
        return data["choices"][0]["message"]["content"]

    return dict(endpoint.run_concurrently(ask, contents, concurrency))


def test_the_event_loop_path_sends_the_key_and_the_sdk_headers(server, monkeypatch):
    monkeypatch.setenv("EM_TEST_JUDGE_KEY", "sk-test-123")
    endpoint = Endpoint(EndpointSettings(model="fake-judge", base_url=server.url, api_key_env="EM_TEST_JUDGE_KEY"))
    answers = ask_all(endpoint, ["a", "b"])
    assert all(isinstance(text, str) and text.isdigit() for text in answers.values())
    sent = {name.lower(): value for name, value in server.headers[-1].items()}
    assert sent["authorization"] == "Bearer sk-test-123"
    assert sent["content-type"] == "application/json"
    assert "openai" in sent["user-agent"].lower()  # the SDK's own headers go along
    assert (endpoint.usage.requests, endpoint.usage.prompt_tokens) == (2, 40)


def test_the_event_loop_path_sorts_failures_as_the_synchronous_one_does(server):
    server.faults["bad"] = [(400, {})]
    server.faults["flaky"] = [(503, {}), (502, {})]
    endpoint = Endpoint(settings(server.url))
    answers = ask_all(endpoint, ["bad", "flaky", "fine"])
    assert answers["bad"] == "failed: HTTP 400: injected 400"  # the server's own words, not retried
    assert answers["flaky"].isdigit() and answers["fine"].isdigit()
    assert (endpoint.usage.requests, endpoint.usage.retries) == (5, 2)

    server.faults["x"] = [(401, {})]
    with pytest.raises(EndpointAbort, match="refused|401") as caught:
        ask_all(Endpoint(settings(server.url)), ["x"])
    assert "API key" in caught.value.hint


def test_an_unreachable_endpoint_is_retried_then_fails_as_a_connection_error():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d/v1" % probe.getsockname()[1]
    endpoint = Endpoint(settings(url, max_retries=2))
    answers = ask_all(endpoint, ["a"])
    assert answers["a"].startswith("failed: connection error") and "after 3 attempts" in answers["a"]
    assert endpoint.usage.retries == 2
