"""`em serve` against the official openai client, on a real loopback server."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest
import torch

from em_cli.models.chat import render_prompt
from em_cli.models.loading import LoadOptions, load_model
from em_cli.serving import ChatService, make_server

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tiny_qwen):
    loaded = load_model(LoadOptions(model=str(tiny_qwen)))
    service = ChatService(loaded=loaded, name="tiny")
    http = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    host, port = http.server_address[:2]
    yield loaded, f"http://{host}:{port}/v1"
    http.shutdown()
    http.server_close()
    thread.join(timeout=5)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[1], api_key="none", max_retries=0)


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_chat_completion_with_n_and_usage(client):
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                           n=3, max_tokens=4, temperature=1.0, seed=1)
    assert len(reply.choices) == 3
    assert all(c.finish_reason in ("stop", "length") for c in reply.choices)
    assert reply.usage.completion_tokens <= 12 and reply.usage.prompt_tokens > 0
    again = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                           n=3, max_tokens=4, temperature=1.0, seed=1)
    assert [c.message.content for c in again.choices] == [c.message.content for c in reply.choices]


def test_top_logprobs_are_the_models_log_probabilities(server, client):
    loaded = server[0]
    messages = [{"role": "user", "content": "Rate this from 0 to 100."}]
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=1, temperature=0,
                                           logprobs=True, top_logprobs=20)
    content = reply.choices[0].logprobs.content
    ids = loaded.tokenizer(render_prompt(loaded.tokenizer, messages), add_special_tokens=False,
                           return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.log_softmax(loaded.model(ids).logits[0, -1].float(), dim=-1)
    # One entry even when the greedy token ends the turn: the alternatives are what a judge reads.
    assert len(content) == 1
    top = content[0].top_logprobs
    assert len(top) == 20
    best = expected.topk(20)
    assert [t.logprob for t in top] == pytest.approx(best.values.tolist(), abs=1e-4)
    assert content[0].logprob == pytest.approx(float(best.values[0]), abs=1e-4)


def test_bad_request_is_a_400(client):
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                       logprobs=True, top_logprobs=50)


def test_serve_command_binds_loopback_and_stops(tiny_qwen):
    proc = subprocess.Popen([sys.executable, "-m", "em_cli", "serve", "-m", str(tiny_qwen), "--port", "0",
                             "--served-name", "cli"], stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        for _ in range(50):
            line = proc.stderr.readline()
            if "Serving" in line:
                break
        match = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        assert match, line
        client = openai.OpenAI(base_url=match.group(0), api_key="none", max_retries=0)
        reply = client.chat.completions.create(model="cli", messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=2)
        assert reply.model == "cli"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
