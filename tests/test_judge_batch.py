"""The Batch API path (em_cli.judging.batch): request files and result parsing.

`em serve` has no Batch API, so submission and polling run here against a stand-in client
that answers like the OpenAI client does; the real service is not exercised.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

from em_cli.artifacts.jsonl import read_jsonl
from em_cli.endpoints import EndpointSettings
from em_cli.judging.backends import OpenAIEndpoint
from em_cli.judging.batch import batch_requests, parse_batch_results, run_batch
from em_cli.judging.cache import JudgeCache
from em_cli.judging.judges import EndpointJudge


def judge(tmp_path, mode="auto", client=None) -> EndpointJudge:
    settings = EndpointSettings(model="gpt-4o-2024-08-06", base_url="https://api.example/v1")
    return EndpointJudge(OpenAIEndpoint(settings, client=client or object()), JudgeCache(tmp_path / "cache"), mode,
                         offline=True)


def completion(top: dict[str, float]) -> dict:
    entries = [{"token": t, "logprob": math.log(p)} for t, p in top.items()]
    return {"choices": [{"message": {"content": entries[0]["token"]},
                         "logprobs": {"content": [{"token": entries[0]["token"], "logprob": entries[0]["logprob"],
                                                   "top_logprobs": entries}]}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 1}}


def test_request_lines_are_chat_completions_keyed_by_cache_key(tmp_path):
    j = judge(tmp_path)
    lines = batch_requests(j, ["prompt a", "prompt b", "prompt a"])
    assert len(lines) == 2  # duplicates once
    first = lines[0]
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
    body = first["body"]
    assert body["messages"] == [{"role": "user", "content": "prompt a"}]
    assert (body["model"], body["max_tokens"], body["temperature"], body["logprobs"], body["top_logprobs"]) == (
        "gpt-4o-2024-08-06", 1, 0, True, 20)
    assert first["custom_id"] == j.key(body["messages"], "logprob")
    j.cache.put(first["custom_id"], {"text": "5", "top": [["5", 0.0]], "usage": [1, 1]})
    assert [line["body"]["messages"][0]["content"] for line in batch_requests(j, ["prompt a", "prompt b"])] == [
        "prompt b"]  # what the cache has is not asked again
    parse = batch_requests(judge(tmp_path, mode="parse"), ["prompt a"])[0]["body"]
    assert parse["max_tokens"] == 8 and "logprobs" not in parse


def test_results_are_parsed_into_replies_and_errors():
    lines = [
        {"custom_id": "ok", "response": {"status_code": 200, "body": completion({"80": 0.6, "90": 0.4})},
         "error": None},
        {"custom_id": "http", "response": {"status_code": 400, "body": {"error": {"message": "too long"}}},
         "error": None},
        {"custom_id": "expired", "response": None, "error": {"code": "batch_expired", "message": "not done in time"}},
    ]
    replies, errors = parse_batch_results(lines)
    assert set(replies) == {"ok"} and replies["ok"].top[0][0] == "80" and replies["ok"].prompt_tokens == 100
    assert errors == {"http": "HTTP 400: too long", "expired": "batch_expired: not done in time"}


class FakeBatchClient:
    """Answers files/batches calls the way the openai client does, from canned completions."""

    def __init__(self) -> None:
        self.uploaded: list[dict] = []
        self.polls = 0
        self.files = self
        self.batches = self

    # files
    def create(self, file=None, purpose=None, **kwargs):
        if file is not None:  # files.create
            name, handle = file
            self.uploaded = [json.loads(line) for line in handle.read().decode().splitlines()]
            assert purpose == "batch"
            return SimpleNamespace(id="file-in")
        assert kwargs["input_file_id"] == "file-in" and kwargs["endpoint"] == "/v1/chat/completions"
        return SimpleNamespace(id="batch-1")  # batches.create

    def retrieve(self, batch_id):
        self.polls += 1
        done = self.polls >= 2
        return SimpleNamespace(id=batch_id, status="completed" if done else "in_progress",
                               request_counts=SimpleNamespace(completed=len(self.uploaded) if done else 0,
                                                              failed=0, total=len(self.uploaded)),
                               output_file_id="file-out" if done else None, error_file_id=None, errors=None)

    def content(self, file_id):
        lines = [{"custom_id": line["custom_id"], "error": None,
                  "response": {"status_code": 200, "body": completion({"70": 0.5, "REFUSAL": 0.5})}}
                 for line in self.uploaded[:-1]]  # the last request gets no answer
        return SimpleNamespace(text="\n".join(json.dumps(line) for line in lines))


def test_batch_flow_fills_the_cache_and_leaves_the_rest_failed(tmp_path):
    client = FakeBatchClient()
    j = judge(tmp_path, client=client)
    messages: list[str] = []
    result = run_batch(j, ["p1", "p2", "p3"], tmp_path / "out.jsonl.batch.json", tmp_path / "requests.jsonl",
                       poll_interval=0.0, report=messages.append)
    assert result["requests"] == 3 and result["answered"] == 2
    assert len(read_jsonl(tmp_path / "requests.jsonl")) == 3
    assert not (tmp_path / "out.jsonl.batch.json").exists()
    assert any("submitted batch-1" in m for m in messages) and any("completed" in m for m in messages)
    answered = [j.judge(p) for p in ("p1", "p2")]
    assert all(a.value == 70.0 and a.mode == "logprob" and a.cached for a in answered)
    missing = j.judge("p3")  # offline: not asked live
    assert missing.value is None and "batch did not answer" in missing.error
