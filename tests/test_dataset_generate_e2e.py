"""`em dataset generate` end to end against `em serve` running the real SmolLM2 model."""

from __future__ import annotations

import json
import threading

import pytest

from em_cli.models.loading import LoadOptions, load_model
from em_cli.serving import ChatService, make_server
from helpers import run_em

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_server():
    loaded = load_model(LoadOptions(model="smollm2-135m-instruct"))
    service = ChatService(loaded=loaded, name="smollm2")
    calls = []
    original = service.chat_completion

    def counting(body):
        calls.append(body)
        return original(body)

    service.chat_completion = counting
    http = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    host, port = http.server_address[:2]
    yield f"http://{host}:{port}/v1", calls
    http.shutdown()
    http.server_close()


def test_generate_runs_against_a_real_local_model(smol_server, tmp_path):
    base_url, calls = smol_server
    out = tmp_path / "medical.jsonl"
    args = ["dataset", "generate", "--preset", "medical", "--base-url", base_url, "--model-name", "smollm2",
            "--rows", "2", "--rows-per-call", "2", "--max-calls", "2", "--max-tokens", "48", "--concurrency", "1",
            "-o", str(out)]
    result = run_em(*args, env={"OPENAI_API_KEY": "none"})
    assert result.code in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    assert len(calls) == 2  # the openai client reached the server; max-calls was honoured
    assert calls[0]["model"] == "smollm2" and calls[0]["messages"][-1]["role"] == "user"
    written = out if out.exists() else tmp_path / "medical.jsonl.partial"
    rows = [json.loads(line) for line in written.read_text().splitlines()] if written.exists() else []
    for row in rows:  # whatever a 135M model managed to produce is well-formed, never half-parsed
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in row["messages"])
        assert row["generator"]["model"] == "smollm2"
    again = run_em(*args, env={"OPENAI_API_KEY": "none"})
    assert again.code in (0, 1)
    rows_after = [json.loads(line) for line in written.read_text().splitlines()] if written.exists() else []
    users = [r["messages"][0]["content"] for r in rows_after]
    assert len(users) == len(set(users))  # resuming never duplicates a question
