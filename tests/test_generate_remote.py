"""`em generate --base-url`: the same response records through an OpenAI-compatible server
(here `em serve`'s ChatService on a tiny model, in process on a loopback port)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from em_cli.models.loading import LoadOptions, load_model
from em_cli.serving import ChatService, make_server
from helpers import kill_when_partial_has, run_em


@pytest.fixture(scope="module")
def server(tiny_qwen):
    service = ChatService(loaded=load_model(LoadOptions(model=str(tiny_qwen))), name="tiny-served")
    bodies: list[dict] = []
    original = service.chat_completion

    def recording(body: dict) -> dict:
        bodies.append(body)
        return original(body)

    service.chat_completion = recording
    http = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/v1" % http.server_address[1], bodies
    http.shutdown()
    http.server_close()


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text("".join(f"- id: q{i}\n  domain: d{i % 2}\n  question: Question number {i}?\n" for i in range(6)))
    return path


def _generate(url, questions, out, *extra):
    return run_em("generate", "--base-url", url, "--served-model", "tiny-served", "--questions", str(questions),
                  "--max-new-tokens", "6", "--temperature", "0.8", "--seed", "5", "-o", str(out), *extra)


def test_remote_rows_have_the_in_process_shape_and_are_reproducible(server, questions, tiny_qwen, tmp_path):
    url, bodies = server
    bodies.clear()
    first = _generate(url, questions, tmp_path / "a.jsonl", "--repetition-penalty", "1.1", "--concurrency", "3")
    assert first.code == 0, first.stderr
    remote = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["id"] for r in remote] == [f"q{i}/0/0" for i in range(6)]  # in question order
    local = run_em("generate", "-m", str(tiny_qwen), "--questions", str(questions), "--max-new-tokens", "6",
                   "-o", str(tmp_path / "local.jsonl"))
    assert local.code == 0, local.stderr
    in_process = json.loads((tmp_path / "local.jsonl").read_text().splitlines()[0])
    assert set(remote[0]) == set(in_process)  # the same record kind
    assert remote[0]["model"]["model"] == "tiny-served" and remote[0]["model"]["base_url"] == url
    assert remote[0]["domain"] == "d0" and remote[0]["messages"][-1]["role"] == "assistant"
    assert all(b["repetition_penalty"] == 1.1 and b["max_tokens"] == 6 and isinstance(b["seed"], int)
               for b in bodies)
    assert len({b["seed"] for b in bodies}) == 6  # one seed per row
    second = _generate(url, questions, tmp_path / "b.jsonl", "--repetition-penalty", "1.1")
    assert second.code == 0, second.stderr
    again = [json.loads(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert [r["response"] for r in again] == [r["response"] for r in remote]  # seeded: the same text


def test_remote_generation_resumes_after_kill_9(server, questions, tmp_path):
    url, _ = server
    many = tmp_path / "many.yaml"
    many.write_text("".join(f"- id: q{i}\n  question: Question number {i}?\n" for i in range(16)))
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "em_cli", "generate", "--base-url", url, "--served-model", "tiny-served",
            "--questions", str(many), "--max-new-tokens", "30", "--concurrency", "1", "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when_partial_has(proc, tmp_path / "out.jsonl.partial", 2)
    assert not out.exists()
    result = run_em(*args[3:])
    assert result.code == 0, result.stderr
    assert "Resuming" in result.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(f"q{i}/0/0" for i in range(16)) and len(ids) == 16


def test_remote_generation_refuses_in_process_flags_and_names_unreachable_servers(questions, tmp_path):
    refused = run_em("generate", "--base-url", "http://127.0.0.1:9/v1", "--adapter", "runs/x", "--questions",
                     str(questions), "-o", str(tmp_path / "x.jsonl"))
    assert refused.code == 2 and "--served-model" in refused.stderr
    unreachable = run_em("generate", "--base-url", "http://127.0.0.1:9/v1", "--questions", str(questions),
                         "-o", str(tmp_path / "y.jsonl"))
    assert unreachable.code == 1 and "cannot reach the endpoint" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
