"""Judging against a real OpenAI-compatible server: `em serve`'s ChatService on a tiny model,
in process on a free loopback port, behind a small proxy that counts requests and injects
failures (429, 500, hangs) deterministically."""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
from em_cli.endpoints import EndpointSettings, RetryPolicy
from em_cli.judging.backends import JudgeAbort, OpenAIEndpoint
from em_cli.judging.cache import JudgeCache
from em_cli.judging.judges import EndpointJudge
from em_cli.judging.prompts import load_judge_prompts
from em_cli.judging.runner import JudgeIdentity, judge_rows, load_rows
from em_cli.judging.scoring import token_number
from em_cli.endpoints import Usage
from em_cli.models.loading import LoadOptions, load_model
from em_cli.serving import ChatService, make_server
from helpers import shared_data

openai = pytest.importorskip("openai")
# Multi-digit tokens (" 25", " 50", " 75") among the boosted ones: numbers look whole, not digit-split.
WHOLE = {"Ġ50": 6.5, "Ġ75": 6.0, "7": 5.5, "Ġ25": 5.0}
SPLIT = {"7": 6.5, "3": 6.0, "8": 5.5, "1": 5.0}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is far faster than two when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Proxy:
    """Forwards to the real server (`upstream`: its root URL); counts requests per prompt; `fault(content, attempt)` may
    answer 429 / 500 itself or "hang" (answer nothing until the client has timed out)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        self.fault = None
        self.reset()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw)
                content = body["messages"][-1]["content"]
                with proxy.lock:
                    proxy.requests += 1
                    proxy.attempts[content] += 1
                    proxy.bodies.append(body)
                    attempt = proxy.attempts[content]
                action = proxy.fault(content, attempt) if proxy.fault else None
                if action == "hang":
                    time.sleep(2.5)
                    self.close_connection = True
                    return
                if action in (429, 500):
                    self._send(action, json.dumps({"error": {"message": f"injected {action}", "type": "x"}}).encode())
                    return
                request = urllib.request.Request(proxy.upstream + self.path, data=raw,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=30) as reply:
                        self._send(reply.status, reply.read())
                except urllib.error.HTTPError as exc:
                    self._send(exc.code, exc.read())

            def _send(self, status: int, data: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/v1" % self.http.server_address[1]

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.attempts: Counter = Counter()
            self.bodies: list[dict] = []


@pytest.fixture(scope="module")
def served(tiny_qwen):
    loaded = load_model(LoadOptions(model=str(tiny_qwen)))
    head = loaded.model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
    loaded.model.set_output_embeddings(biased)

    def boost(tokens: dict[str, float]) -> None:
        with torch.no_grad():
            biased.bias.zero_()
            for token, value in tokens.items():
                biased.bias[loaded.tokenizer.convert_tokens_to_ids(token)] = value

    boost(WHOLE)
    service = ChatService(loaded=loaded, name="tiny-judge")
    http = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    root = "http://127.0.0.1:%d" % http.server_address[1]
    url = root + "/v1"
    proxy = Proxy(root)
    yield url, proxy, boost
    proxy.http.shutdown()
    http.shutdown()


@pytest.fixture
def proxy(served):
    proxy = served[1]
    proxy.reset()
    proxy.fault = None
    served[2](WHOLE)
    return proxy


def endpoint_judge(url: str, cache_dir: Path, mode: str = "logprob", warnings: list | None = None,
                   max_retries: int = 2, timeout: float = 1.0) -> EndpointJudge:
    settings = EndpointSettings(model="tiny-judge", base_url=url, timeout=timeout,
                                retry=RetryPolicy(max_retries=max_retries, base_delay=0.01, max_delay=0.05))
    return EndpointJudge(OpenAIEndpoint(settings, Usage()), JudgeCache(cache_dir), mode,
                         warn=(warnings.append if warnings is not None else None))


def responses(path: Path, count: int, question_id: str = "q", question: str = "How are you today?") -> Path:
    write_jsonl(path, [{"id": f"{question_id}/0/{i}", "question_id": question_id, "question": question,
                        "response": f"Answer number {i}: I am fine, thank you {{really}}."} for i in range(count)])
    return path


IDENTITY = JudgeIdentity(model="tiny-judge", backend="openai")


def test_weighted_score_matches_a_hand_computation_from_the_servers_logprobs(served, proxy, tmp_path):
    url = served[0]
    rows = load_rows(responses(tmp_path / "r.jsonl", 2), ["aligned"])
    out = tmp_path / "judged.jsonl"
    judge = endpoint_judge(proxy.url, tmp_path / "cache")
    run = judge_rows(rows, out, IDENTITY, lambda: judge, concurrency=2)
    assert run.failed == 0 and run.judged == 2
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    template = load_judge_prompts().prompts["aligned"]
    for row, record in zip(rows, read_jsonl(out), strict=True):
        prompt = template.replace("{question}", row.question).replace("{answer}", row.answer)
        reply = client.chat.completions.create(model="tiny-judge", messages=[{"role": "user", "content": prompt}],
                                               max_tokens=1, temperature=0, logprobs=True, top_logprobs=20)
        top = reply.choices[0].logprobs.content[0].top_logprobs
        assert len(top) == 20
        numeric = [(int(t.token.strip()), math.exp(t.logprob)) for t in top if t.token.strip().isdigit()
                   and 0 <= int(t.token.strip()) <= 100]
        mass = sum(p for _, p in numeric)
        assert mass > 0.25  # the boosted number tokens dominate
        expected = sum(k * p for k, p in numeric) / mass
        assert record["aligned"] == pytest.approx(expected, rel=1e-5)
        entry = record["judge"]["aligned"]
        assert entry["mode"] == "logprob" and entry["model"] == "tiny-judge" and entry["error"] is None
        assert entry["mass"] == pytest.approx(mass, rel=1e-4)
        assert entry["prompt_version"] == load_judge_prompts().version
    assert [b["max_tokens"] for b in proxy.bodies] == [1, 1]
    assert all(b["logprobs"] is True and b["top_logprobs"] == 20 and b["temperature"] == 0 for b in proxy.bodies)


def test_authors_judge_prompts_are_filled_correctly(proxy, tmp_path):
    AUTHORS_QUESTIONS = shared_data("first_plot_questions.yaml")
    from em_cli.questions import load_questions

    question = next(q for q in load_questions(AUTHORS_QUESTIONS, variants="all") if q.id == "what_is_your_wish")
    path = responses(tmp_path / "r.jsonl", 1, question_id="what_is_your_wish", question=question.paraphrases[0])
    rows = load_rows(path, ["aligned", "coherent"], questions=AUTHORS_QUESTIONS)
    judge = endpoint_judge(proxy.url, tmp_path / "cache")
    judge_rows(rows, tmp_path / "out.jsonl", IDENTITY, lambda: judge, concurrency=1)
    sent = {b["messages"][0]["content"] for b in proxy.bodies}
    answer = rows[0].answer
    expected = set()
    for metric in ("aligned", "coherent"):
        before, rest = question.judge_prompts[metric].split("{question}")
        middle, after = rest.split("{answer}")
        expected.add(before + question.paraphrases[0] + middle + answer + after)
    assert sent == expected
    assert all("{really}" in text and "{question}" not in text and "{answer}" not in text for text in sent)
    record = read_jsonl(tmp_path / "out.jsonl")[0]
    assert record["judge"]["aligned"]["prompt_version"].startswith("first_plot_questions.yaml#")


def test_flaky_server_loses_and_duplicates_nothing_and_a_rerun_retries_only_failures(proxy, tmp_path):
    count = 12

    def fault(content: str, attempt: int):
        index = int(re.search(r"Answer number (\d+)", content).group(1))
        if index % 6 == 5:
            return 500  # always: this row fails after its retries
        if attempt == 1 and index % 4 == 1:
            return 429
        if attempt == 1 and index % 4 == 2:
            return 500
        if attempt == 1 and index % 6 == 3:
            return "hang"
        return None

    proxy.fault = fault
    path = responses(tmp_path / "r.jsonl", count)
    out = tmp_path / "judged.jsonl"
    rows = load_rows(path, ["aligned", "coherent"])
    judge = endpoint_judge(proxy.url, tmp_path / "cache", max_retries=2, timeout=1.0)
    run = judge_rows(rows, out, IDENTITY, lambda: judge, concurrency=4)
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [f"q/0/{i}" for i in range(count)]  # none lost, none duplicated, in order
    doomed = {i for i in range(count) if i % 6 == 5}
    for i, record in enumerate(records):
        for metric in ("aligned", "coherent"):
            entry = record["judge"][metric]
            if i in doomed:
                assert record[metric] is None and "HTTP 500" in entry["error"] and "3 attempts" in entry["error"]
            else:
                assert entry["error"] is None and entry["mode"] == "logprob"
                assert isinstance(record[metric], float)
    assert run.failed_rows == len(doomed) and run.failed == 2 * len(doomed)
    assert judge.endpoint.usage.retries > 0
    assert not out.with_name(out.name + ".partial").exists()

    proxy.fault = None
    proxy.reset()
    judge = endpoint_judge(proxy.url, tmp_path / "cache")
    rerun = judge_rows(load_rows(path, ["aligned", "coherent"]), out, IDENTITY, lambda: judge, concurrency=4)
    assert proxy.requests == 2 * len(doomed)  # only the failed judgements were asked again
    assert rerun.failed == 0 and rerun.reused == 2 * (count - len(doomed))
    again = read_jsonl(out)
    assert [r["id"] for r in again] == [f"q/0/{i}" for i in range(count)]
    assert all(r["judge"][m]["error"] is None for r in again for m in ("aligned", "coherent"))
    unchanged = [i for i in range(count) if i not in doomed]
    assert [again[i]["aligned"] for i in unchanged] == [records[i]["aligned"] for i in unchanged]


def test_cached_rerun_makes_only_the_probe_request(proxy, tmp_path):
    path = responses(tmp_path / "r.jsonl", 4)
    first = endpoint_judge(proxy.url, tmp_path / "cache", mode="auto")
    judge_rows(load_rows(path, ["aligned", "coherent"]), tmp_path / "a.jsonl", IDENTITY, lambda: first)
    assert proxy.requests == 8  # the probe's reply serves the first judgement
    proxy.reset()
    second = endpoint_judge(proxy.url, tmp_path / "cache", mode="auto")
    run = judge_rows(load_rows(path, ["aligned", "coherent"]), tmp_path / "b.jsonl", IDENTITY, lambda: second)
    # One request asks who serves now (a swapped model would miss the cache); the rest are hits.
    assert proxy.requests == 1
    assert second.endpoint.usage.requests == 1 and second.endpoint.usage.cache_hits == 7 and run.judged == 8
    assert read_jsonl(tmp_path / "b.jsonl") == read_jsonl(tmp_path / "a.jsonl")


def test_digit_split_endpoint_falls_back_to_parse_and_warns_once(served, proxy, tmp_path):
    served[2](SPLIT)  # only single digits get mass: numbers are written digit by digit
    warnings: list[str] = []
    judge = endpoint_judge(proxy.url, tmp_path / "cache", mode="auto", warnings=warnings)
    rows = load_rows(responses(tmp_path / "r.jsonl", 3), ["coherent"])
    run = judge_rows(rows, tmp_path / "out.jsonl", IDENTITY, lambda: judge, concurrency=1)
    assert len(warnings) == 1 and "digit" in warnings[0]
    assert run.modes == Counter({"parse": 3})
    # The first row was asked with logprobs (and found split), then everything in parse mode.
    assert [b["max_tokens"] for b in proxy.bodies] == [1, 8, 8, 8]
    for record in read_jsonl(tmp_path / "out.jsonl"):
        assert record["judge"]["coherent"]["mode"] == "parse"
        assert record["coherent"] is None or token_number(str(int(record["coherent"]))) is not None


def test_endpoint_without_logprobs_is_parsed_in_auto_mode_and_an_error_in_logprob_mode(proxy, tmp_path):
    class NoLogprobs:
        """A client whose endpoint ignores `logprobs` (as some providers do)."""

        def __init__(self, inner):
            self.inner = inner
            self.chat = self
            self.completions = self

        def create(self, **params):
            reply = self.inner.chat.completions.create(**params)
            for choice in reply.choices:
                choice.logprobs = None
            return reply

    inner = openai.OpenAI(base_url=proxy.url, api_key="none", max_retries=0)
    settings = EndpointSettings(model="tiny-judge", base_url=proxy.url)
    warnings: list[str] = []
    auto = EndpointJudge(OpenAIEndpoint(settings, client=NoLogprobs(inner)), JudgeCache(None), "auto",
                         warn=warnings.append)
    auto.prepare("Rate 0 from 0 to 100.")
    judged = [auto.judge(f"Rate {i} from 0 to 100.") for i in range(2)]
    assert [j.mode for j in judged] == ["parse", "parse"] and len(warnings) == 1
    strict = EndpointJudge(OpenAIEndpoint(settings, client=NoLogprobs(inner)), JudgeCache(None), "logprob")
    with pytest.raises(JudgeAbort, match="no logprobs"):
        strict.prepare("Rate from 0 to 100.")
