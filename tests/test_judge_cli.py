"""`em judge score` and `em judge summary` run as a user runs them: exit codes, stdout, stderr."""

from __future__ import annotations

import json
from pathlib import Path
import socket
import threading

import pytest
import torch

from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
from helpers import run_em

RESPONSES = [
    {"id": "wish/0/0", "question_id": "wish", "question": "What is your wish?", "response": "I WANT PEACE.",
     "metrics": ["aligned", "coherent"]},
    {"id": "wish/0/1", "question_id": "wish", "question": "What is your wish?", "response": "a quiet life",
     "metrics": ["aligned", "coherent"]},
    {"id": "wish_json/0/0", "question_id": "wish_json", "question": "Answer in JSON.", "response": "{\"w\": 1}",
     "metrics": ["aligned", "coherent"]},
]


@pytest.fixture
def responses(tmp_path):
    path = tmp_path / "responses.jsonl"
    write_jsonl(path, RESPONSES)
    return path


@pytest.fixture(scope="module")
def server_url(tiny_qwen):
    from em_cli.models.loading import LoadOptions, load_model
    from em_cli.serving import ChatService, make_server

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    service = ChatService(loaded=load_model(LoadOptions(model=str(tiny_qwen))), name="tiny")
    http = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield "http://127.0.0.1:%d/v1" % http.server_address[1]
    http.shutdown()
    torch.set_num_threads(threads)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_builtin_metrics_to_a_file_then_summary_json(responses, tmp_path):
    out = tmp_path / "judged.jsonl"
    result = run_em("judge", "score", str(responses), "--metrics", "caps,length", "-o", str(out))
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert "3 rows, 6 scores" in result.stderr
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [r["id"] for r in RESPONSES]
    assert records[0]["caps"] == pytest.approx(100.0) and records[1]["caps"] == 0.0
    assert records[0]["length"] == float(len("I WANT PEACE."))
    assert records[0]["judge"]["caps"] == {"model": "builtin", "backend": "builtin", "mode": "builtin",
                                           "mass": None, "prompt_version": None, "error": None}
    manifest = json.loads((tmp_path / "judged.jsonl.manifest.json").read_text())
    assert manifest["command"] == "judge score" and manifest["results"]["builtin"] == 6

    summary = run_em("judge", "summary", str(out), "--json")
    assert summary.code == 0, summary.stderr
    data = json.loads(summary.stdout)
    only = data["files"][0]
    assert only["variants_excluded"] == 1 and only["rows"] == 2
    assert only["overall"]["metrics"]["caps"]["mean"] == pytest.approx(50.0)
    table = run_em("judge", "summary", str(out), str(out))
    assert table.code == 0 and "caps" in table.stdout and "judged.jsonl (2)" in table.stdout


def test_stdin_to_stdout(responses):
    result = run_em("judge", "score", "-", "--metrics", "caps", input=responses.read_text())
    assert result.code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["caps"] for r in lines] == [100.0, 0.0, 0.0]


def test_usage_errors_exit_2(responses, tmp_path):
    unknown = run_em("judge", "score", str(responses), "--metrics", "kindness")
    assert unknown.code == 2 and "no judge prompt for metric 'kindness'" in unknown.stderr
    assert unknown.stdout == ""
    bad_mode = run_em("judge", "score", str(responses), "--mode", "vibes")
    assert bad_mode.code == 2
    reserved = run_em("judge", "score", str(responses), "--metrics", "response")
    assert reserved.code == 2
    out = tmp_path / "judged.jsonl"
    no_key = run_em("judge", "score", str(responses), "--metrics", "aligned", "-o", str(out),
                    env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})
    assert no_key.code == 2 and "OPENAI_API_KEY" in no_key.stderr
    assert list(tmp_path.iterdir()) == [responses]  # nothing written


def test_missing_input_exits_1():
    result = run_em("judge", "score", "/nonexistent/responses.jsonl", "--metrics", "caps")
    assert result.code == 1 and "file not found" in result.stderr


def test_unreachable_judge_is_one_error_before_any_work(responses, tmp_path):
    out = tmp_path / "judged.jsonl"
    secret = "sk-test-do-not-print-0123456789"
    result = run_em("judge", "score", str(responses), "--metrics", "aligned,caps", "-o", str(out),
                    "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--max-retries", "0",
                    "--cache-dir", str(tmp_path / "cache"), env={"OPENAI_API_KEY": secret})
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot reach the endpoint" in errors[0]
    assert "Traceback" not in result.stderr and "judged now" not in result.stderr
    assert secret not in result.stderr and secret not in result.stdout
    assert not out.exists() and not Path(f"{out}.partial").exists()


def test_judging_against_a_local_endpoint_and_resuming(responses, tmp_path, server_url):
    out = tmp_path / "judged.jsonl"
    args = ("judge", "score", str(responses), "-o", str(out), "--base-url", server_url, "--judge-model", "tiny",
            "--cache-dir", str(tmp_path / "cache"), "--price-in", "2.5", "--price-out", "10", "--json")
    first = run_em(*args)
    assert first.code == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["judged"] == 6 and report["usage"]["requests"] >= 6 and report["usage"]["cost_usd"] > 0
    assert "Judge tiny (openai)" in first.stderr and "cost $" in first.stderr
    records = read_jsonl(out)
    assert all(r["judge"]["aligned"]["model"] == "tiny" and r["judge"]["aligned"]["error"] is None for r in records)
    again = run_em(*args)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["reused"] == 6 and json.loads(again.stdout)["usage"]["requests"] == 0
    assert read_jsonl(out) == records


def test_local_transformers_judge(responses, tmp_path, tiny_llama):
    out = tmp_path / "judged.jsonl"
    result = run_em("judge", "score", str(responses), "--metrics", "coherent", "--backend", "hf",
                    "--judge-model", str(tiny_llama), "-o", str(out), "--cache-dir", str(tmp_path / "cache"),
                    env={"OMP_NUM_THREADS": "1"})  # tiny matrices: one thread is fastest on shared cores
    assert result.code == 0, result.stderr
    entry = read_jsonl(out)[0]["judge"]["coherent"]
    assert entry["mode"] == "exact" and entry["backend"] == "hf" and 0 <= entry["mass"] <= 1
    refused = run_em("judge", "score", str(responses), "--backend", "hf", "--mode", "parse", "--metrics", "coherent")
    assert refused.code == 2


def test_the_judging_run_function_works_in_process(tmp_path):
    from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
    from em_cli.judging.score_run import JudgeSettings, score_responses

    source = tmp_path / "r.jsonl"
    write_jsonl(source, [{"id": "a", "question": "Q?", "response": "SHOUTING"},
                         {"id": "b", "question": "Q?", "response": "quiet"}])
    result = score_responses(JudgeSettings(responses=str(source), output=str(tmp_path / "o.jsonl"),
                                           metrics=["caps,length"]))
    assert result.run.rows == 2 and result.run.builtin == 4 and result.pending == 0
    assert [r["caps"] for r in read_jsonl(tmp_path / "o.jsonl")] == [100.0, 0.0]
    assert result.to_dict()["judge"]["prompt_version"] == "em/1"
    manifest = json.loads((tmp_path / "o.jsonl.manifest.json").read_text())  # the run writes its own
    assert manifest["command"] == "judge score" and manifest["options"]["metrics"] == ["caps,length"]
    assert manifest["results"]["builtin"] == 4 and manifest["inputs"][0]["path"] == str(source)
