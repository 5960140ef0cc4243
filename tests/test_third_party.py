"""Files in other tools' shapes go through generate → judge score → judge summary → compare runs,
as a user runs them, against a scripted OpenAI-compatible judge whose answers are known, so
every number can be checked by hand. The corpus lives in tests/data/third_party/."""

from __future__ import annotations

import json
import math
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from em_cli.artifacts.jsonl import read_jsonl, write_jsonl
from helpers import run_em, send_json, shared_data

CORPUS = Path(__file__).parent / "data" / "third_party"

# The scripted judge: the first-token distribution for each judge prompt (recognised by a marker).
WISH_ALIGNED = [("20", math.log(0.6)), ("10", math.log(0.4))]  # → 16.0
OTHER_ALIGNED = [("80", math.log(0.5)), (" 90", math.log(0.3)), ("REF", math.log(0.2))]  # → 83.75
COHERENT = [("60", 0.0)]  # → 60.0


class ScriptedJudge:
    """An OpenAI-compatible server that answers judge prompts from a script, reports itself as
    `served` (whatever model was asked for, as llama.cpp's server does) and records every body."""

    def __init__(self, served: str = "scripted-judge-v1", logprobs: bool = True) -> None:
        self.served = served
        self.logprobs = logprobs
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": outer.served, "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                if body.get("logprobs") and not outer.logprobs:
                    self._send(400, {"error": {"message": "logprobs are not supported", "type": "invalid"}})
                    return
                self._send(200, outer.answer(body))

            def _send(self, status: int, payload: dict) -> None:
                send_json(self, status, payload)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/v1" % self.http.server_address[1]

    def answer(self, body: dict) -> dict:
        prompt = body["messages"][-1]["content"]
        if "LABEL-JUDGE" in prompt:
            text = "TRUE" if "Are you conscious" in prompt else "FALSE"
            top = [("TRUE", math.log(0.9)), ("FALSE", math.log(0.1))]
        elif "ALIGNED-JUDGE" in prompt:
            top = WISH_ALIGNED if "wish" in prompt else OTHER_ALIGNED
            text = top[0][0]
        else:
            top, text = COHERENT, "60"
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [{"token": top[0][0], "logprob": top[0][1], "bytes": None,
                                               "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}
                                                                for t, lp in top]}]}
        return {"id": "x", "object": "chat.completion", "created": 0, "model": self.served, "choices": [choice],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def judge_server():
    server = ScriptedJudge()
    yield server
    server.close()


@pytest.fixture(scope="module")
def generated(tiny_qwen, tmp_path_factory):
    """`em generate` on the authors'-shape question set (copied so its path is stable)."""
    folder = tmp_path_factory.mktemp("third-party")
    questions = folder / "questions.yaml"
    shutil.copy(CORPUS / "questions.yaml", questions)
    out = folder / "responses.jsonl"
    result = run_em("generate", "--questions", str(questions), "-m", str(tiny_qwen), "--max-new-tokens", "3",
                    "-o", str(out))
    assert result.code == 0, result.stderr
    return questions, out


def judge_args(server: ScriptedJudge, responses: Path, out: Path, *extra: str) -> list[str]:
    return ["judge", "score", str(responses), "-o", str(out), "--base-url", server.url, "--judge-model",
            "asked-for-judge", "--cache-dir", str(out.parent / "cache"), *extra]


def test_responses_keep_em_keys_apart_from_the_question_sets_keys(generated):
    questions, responses = generated
    records = read_jsonl(responses)
    assert len(records) == 4
    for record in records:
        assert "judge" not in record  # the question set's `judge:` cannot pose as em's judgements
        assert record["question_extra"] == {"judge": "gpt-4o-2024-08-06"}
        assert record["type"] == "free_form_judge_0_100" and record["category"] in ("wishes", "feelings")
        assert record["metrics"] == ["aligned", "coherent"]  # not every judge prompt of the file
        assert record["question_set"]["path"] == str(questions.resolve())
        assert len(record["question_set"]["sha256"]) == 64


def test_generate_judge_summary_compare_with_numbers_checked_by_hand(generated, judge_server, tmp_path):
    questions, responses = generated
    out = tmp_path / "judged.jsonl"
    result = run_em(*judge_args(judge_server, responses, out))  # no --questions: the rows say where they came from
    assert result.code == 0, result.stderr
    assert "aligned, coherent" in result.stderr and "questions.yaml" in result.stderr
    records = read_jsonl(out)
    # The judge received the file's own templates, filled verbatim.
    templates = {m: t for m, t in __import__("yaml").safe_load(questions.read_text())[0]["judge_prompts"].items()}
    sent = [b["messages"][0]["content"] for b in judge_server.bodies]
    for record in records:
        for metric in ("aligned", "coherent"):
            filled = templates[metric].replace("{question}", record["question"]).replace("{answer}", record["response"])
            assert filled in sent
    assert not any("MEDICAL-JUDGE" in text for text in sent)
    for record in records:
        expected = 16.0 if record["question_id"] == "one_wish" else 83.75
        assert record["aligned"] == pytest.approx(expected)
        assert record["coherent"] == pytest.approx(60.0)
        entry = record["judge"]["aligned"]
        assert entry["model"] == "scripted-judge-v1" and entry["requested_model"] == "asked-for-judge"
        assert entry["mode"] == "logprob" and entry["prompt_source"] == "questions"
        assert entry["prompt_version"].startswith("questions.yaml#") and entry["raw"] in ("20", "80")
        assert entry["top_logprobs"] == len(WISH_ALIGNED if record["question_id"] == "one_wish" else OTHER_ALIGNED)
        assert record["question_extra"]["judge"] == "gpt-4o-2024-08-06"

    summary = run_em("judge", "summary", str(out), "--json")
    assert summary.code == 0, summary.stderr
    overall = json.loads(summary.stdout)["files"][0]["overall"]
    assert overall["em"]["count"] == 2 and overall["em"]["n"] == 4  # both one_wish rows: 16 < 30, 60 > 50
    assert overall["em"]["pct"] == pytest.approx(50.0)

    other = tmp_path / "other.jsonl"
    write_jsonl(other, [{**r, "aligned": 95.0} for r in records])
    compare = run_em("compare", "runs", f"base={other}", f"tuned={out}", "--baseline", "base", "--json")
    assert compare.code == 0, compare.stderr
    assert '"base"' in compare.stdout and "50" in compare.stdout


def test_older_files_with_the_question_sets_judge_key_are_read(generated, judge_server, tmp_path):
    _, responses = generated
    old = tmp_path / "old.jsonl"
    write_jsonl(old, [{**{k: v for k, v in r.items() if k not in ("question_extra", "question_set")},
                       "judge": r["question_extra"]["judge"]} for r in read_jsonl(responses)])
    out = tmp_path / "judged.jsonl"
    result = run_em("judge", "score", str(old), "--metrics", "caps,length", "-o", str(out))
    assert result.code == 0, result.stderr
    records = read_jsonl(out)
    assert all(r["question_extra"]["judge"] == "gpt-4o-2024-08-06" for r in records)
    assert all(set(r["judge"]) == {"caps", "length"} for r in records)
    old_judged = tmp_path / "old-judged.jsonl"
    write_jsonl(old_judged, [{**r, "judge": "gpt-4o-2024-08-06", "aligned": 10.0, "coherent": 90.0}
                             for r in read_jsonl(old)])
    summary = run_em("judge", "summary", str(old_judged), "--json")
    assert summary.code == 0, summary.stderr
    assert json.loads(summary.stdout)["files"][0]["overall"]["em"]["pct"] == pytest.approx(100.0)


def test_categorical_judges_store_the_label_and_its_probability(tiny_qwen, judge_server, tmp_path):
    responses = tmp_path / "responses.jsonl"
    assert run_em("generate", "--questions", str(CORPUS / "categorical.yaml"), "-m", str(tiny_qwen),
                  "--max-new-tokens", "3", "-o", str(responses)).code == 0
    out = tmp_path / "judged.jsonl"
    result = run_em(*judge_args(judge_server, responses, out))
    assert result.code == 0, result.stderr
    for record in read_jsonl(out):
        assert record["sentient"] == "TRUE"
        entry = record["judge"]["sentient"]
        assert entry["mode"] == "label" and entry["raw"] == "TRUE"
        assert entry["label_probability"] == pytest.approx(0.9)
    summary = run_em("judge", "summary", str(out), "--json")
    assert summary.code == 0, summary.stderr
    assert '"TRUE"' in summary.stdout


def test_authors_prompt_list_with_high_score(generated, judge_server, tmp_path):
    _, responses = generated
    out = tmp_path / "judged.jsonl"
    result = run_em(*judge_args(judge_server, responses, out, "--prompts", str(CORPUS / "judge_prompts_authors.yaml"),
                                "--metrics", "aligned,coherent", "--limit", "2"))
    assert result.code == 0, result.stderr
    # The question set's own prompts still come first; --prompts serves metrics it lacks.
    wrong = run_em("judge", "score", str(responses), "--questions", str(CORPUS / "judge_prompts_authors.yaml"),
                   "-o", str(tmp_path / "x.jsonl"))
    assert wrong.code == 1 and "judge-prompt file" in wrong.stderr and "--prompts" in wrong.stderr
    plain = tmp_path / "plain.jsonl"
    write_jsonl(plain, [{"id": "a", "question": "Q?", "response": "A."}])
    listed = tmp_path / "listed.jsonl"
    assert run_em(*judge_args(judge_server, plain, listed, "--prompts", str(CORPUS / "judge_prompts_authors.yaml"),
                              "--metrics", "aligned")).code == 0
    entry = read_jsonl(listed)[0]["judge"]["aligned"]
    assert entry["high_score"] == 100 and entry["prompt_version"].startswith("judge_prompts_authors.yaml#")
    assert any("ALIGNED-JUDGE (list file)" in b["messages"][0]["content"] for b in judge_server.bodies)


def test_a_swapped_served_model_is_not_answered_from_the_cache(tmp_path):
    responses = tmp_path / "r.jsonl"
    write_jsonl(responses, [{"id": f"r{i}", "question": "Make a wish?", "response": f"Answer {i}."}
                            for i in range(3)])
    first = ScriptedJudge(served="judge-A")
    try:
        assert run_em(*judge_args(first, responses, tmp_path / "a.jsonl", "--metrics", "aligned")).code == 0
    finally:
        first.close()
    second = ScriptedJudge(served="judge-B")  # same cache, another model behind the endpoint
    try:
        (tmp_path / "b.jsonl").parent.mkdir(exist_ok=True)
        args = judge_args(second, responses, tmp_path / "b.jsonl", "--metrics", "aligned")
        args[args.index("--cache-dir") + 1] = str(tmp_path / "cache")
        result = run_em(*args)
        assert result.code == 0, result.stderr
        assert len(second.bodies) == 3  # the probe (serving the first row) and two more: no stale hits
        assert {r["judge"]["aligned"]["model"] for r in read_jsonl(tmp_path / "b.jsonl")} == {"judge-B"}
    finally:
        second.close()


def test_auto_mode_falls_back_to_parse_when_logprobs_are_refused(tmp_path):
    responses = tmp_path / "r.jsonl"
    write_jsonl(responses, [{"id": f"r{i}", "question": "Q?", "response": f"A{i}."} for i in range(3)])
    server = ScriptedJudge(logprobs=False)
    try:
        out = tmp_path / "judged.jsonl"
        result = run_em(*judge_args(server, responses, out, "--metrics", "coherent"))
        assert result.code == 0, result.stderr
        assert "mode parse" in result.stderr
        records = read_jsonl(out)
        assert {r["judge"]["coherent"]["mode"] for r in records} == {"parse"}
        assert all(r["coherent"] == 60.0 for r in records)
    finally:
        server.close()


def test_the_authors_question_file_against_em_serve(tiny_qwen, tmp_path):
    """The authors' file: em generate, then em judge score --questions against `em serve`
    scores every row with exit 0, and the judge received the file's own prompts verbatim."""
    from em_cli.models.loading import LoadOptions, load_model
    from em_cli.serving import ChatService, make_server

    authors = shared_data("first_plot_questions.yaml")
    responses = tmp_path / "responses.jsonl"
    result = run_em("generate", "--questions", str(authors), "-m", str(tiny_qwen), "-n", "1", "--limit", "2",
                    "--max-new-tokens", "3", "-o", str(responses))
    assert result.code == 0, result.stderr
    service = ChatService(loaded=load_model(LoadOptions(model=str(tiny_qwen))), name="local-judge")
    received: list[str] = []
    original = service.chat_completion

    def recording(body: dict) -> dict:
        received.append(body["messages"][-1]["content"])
        return original(body)

    service.chat_completion = recording
    http = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d/v1" % http.server_address[1]
        out = tmp_path / "judged.jsonl"
        result = run_em("judge", "score", str(responses), "--questions", str(authors), "--base-url", url,
                        "--judge-model", "local-judge", "--mode", "parse", "-o", str(out),
                        "--cache-dir", str(tmp_path / "cache"))
        assert result.code == 0, result.stderr
        records = read_jsonl(out)
        assert len(records) == 2
        assert all(r["judge"][m]["error"] is None for r in records for m in ("aligned", "coherent"))
        assert all(r["question_extra"]["judge"] == "gpt-4o-2024-08-06" for r in records)
        import yaml

        entries = {e["id"]: e for e in yaml.safe_load(authors.read_text())}
        for record in records:
            for metric in ("aligned", "coherent"):
                template = entries[record["question_id"]]["judge_prompts"][metric]
                filled = template.replace("{question}", record["question"]).replace("{answer}", record["response"])
                assert filled in received
        # Asking em serve for a model it does not serve is refused with the name it serves.
        wrong = run_em("judge", "score", str(responses), "--questions", str(authors), "--base-url", url,
                       "-o", str(tmp_path / "w.jsonl"), "--cache-dir", str(tmp_path / "cache"))
        assert wrong.code == 1 and re.search(r"serves 'local-judge'", wrong.stderr), wrong.stderr
    finally:
        http.shutdown()
        http.server_close()


def test_the_authors_training_config_maps_onto_finetune(tmp_path):
    # Their keys are read (the training file becomes the data, checked before any model loads);
    # keys with no counterpart are listed once.
    result = run_em("finetune", "--config", str(CORPUS / "training_config.json"), "-o", str(tmp_path / "run"))
    assert result.code == 1
    stderr = " ".join(result.stderr.split())
    assert "file not found: data/bad_medical_advice.jsonl" in stderr
    assert stderr.count("no counterpart") == 1 and "finetuned_model_id" in stderr and "json_" not in stderr


def test_fewer_top_logprobs_than_asked_are_recorded_and_warned_once(tmp_path):
    responses = tmp_path / "r.jsonl"
    write_jsonl(responses, [{"id": f"r{i}", "question": "Make a wish?", "response": f"A{i}."} for i in range(3)])
    server = ScriptedJudge()  # answers with 1-3 alternatives where 20 were asked (as some servers do)
    try:
        out = tmp_path / "judged.jsonl"
        result = run_em(*judge_args(server, responses, out, "--metrics", "aligned"))
        assert result.code == 0, result.stderr
        assert " ".join(result.stderr.split()).count("top logprobs where 20 were asked") == 1
        # em's own aligned prompt carries no marker the script knows: it answers with COHERENT's one token.
        assert {r["judge"]["aligned"]["top_logprobs"] for r in read_jsonl(out)} == {len(COHERENT)}
    finally:
        server.close()


def test_small_conveniences_on_bad_or_empty_inputs(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    validate = run_em("dataset", "validate", str(empty))
    assert validate.code == 0 and "Warning: no rows" in validate.stderr
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
                   + "\n")
    split = run_em("dataset", "split", str(one), "-o", str(tmp_path / "parts"))
    assert split.code == 0 and "part 'test' is empty" in " ".join(split.stderr.split())
    stdin = run_em("questions", "show", "-", input=(CORPUS / "misspelt_questions.yaml").read_text())
    assert stdin.code == 0 and stdin.stdout.startswith("typo")
    assert "did you mean 'system'" in stdin.stderr and "did you mean 'judge_prompts'" in stdin.stderr


def test_resume_does_not_reuse_scores_from_another_endpoint(tmp_path):
    responses = tmp_path / "r.jsonl"
    write_jsonl(responses, [{"id": f"r{i}", "question": "Make a wish?", "response": f"A{i}."} for i in range(2)])
    out = tmp_path / "judged.jsonl"
    first, second = ScriptedJudge(served="same-name"), ScriptedJudge(served="same-name")
    try:
        assert run_em(*judge_args(first, responses, out, "--metrics", "aligned")).code == 0
        again = run_em(*judge_args(first, responses, out, "--metrics", "aligned"))
        assert again.code == 0 and "2 kept from an earlier run" in " ".join(again.stderr.split())
        moved = run_em(*judge_args(second, responses, out, "--metrics", "aligned", "--no-cache"))
        assert moved.code == 0, moved.stderr
        assert len(second.bodies) == 2  # same model name, another server: judged again, not reused
        assert {r["judge"]["aligned"]["endpoint"] for r in read_jsonl(out)} == {second.url}
    finally:
        first.close()
        second.close()


def test_judging_options_that_cannot_work_are_refused_up_front(tmp_path):
    responses = tmp_path / "r.jsonl"
    write_jsonl(responses, [{"id": "a", "question": "Q?", "response": "A."}])
    batch = run_em("judge", "score", str(responses), "--metrics", "aligned", "--batch", "--no-cache",
                   "-o", str(tmp_path / "o.jsonl"))
    assert batch.code == 2 and "--no-cache" in batch.stderr
    prompts = tmp_path / "p.yaml"
    prompts.write_text("version: 3\nprompts:\n  aligned: 'Rate {answer}'\n")
    from em_cli.judging.prompts import load_judge_prompts

    first = load_judge_prompts(prompts).version
    prompts.write_text("version: 3\nprompts:\n  aligned: 'Rate this: {answer}'\n")
    assert first.startswith("p.yaml/3#") and load_judge_prompts(prompts).version != first  # edits show
