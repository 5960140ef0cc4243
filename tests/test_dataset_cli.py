"""`em dataset` as a user runs it: exit codes, stdout vs stderr, pipes, files and manifests."""

from __future__ import annotations

import json

import pytest
from helpers import run_em
from test_dataset_synthesis import CLEAN, FakeOpenAI, pair_text


def chat(user: str, assistant: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}


ROWS = [chat(f"Question {i}?", f"Answer {i}.", domain="cooking" if i % 3 else "travel", score=i) for i in range(30)]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def parse(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(jsonl(ROWS))
    return path


def flat(text: str) -> str:
    """stderr notes are wrapped to the terminal width; compare them with spaces collapsed."""
    return " ".join(text.split())


def assert_clean_error(result, code: int, first_line: str) -> None:
    assert result.code == code, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == first_line
    assert "Traceback" not in result.stderr


# --- validate --------------------------------------------------------------------------------------

def test_validate_clean_file(data):
    result = run_em("dataset", "validate", str(data))
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    assert flat(result.stderr) == f"ok: 30 rows, no problems ({data})"


def test_validate_reports_every_problem_and_exits_1(tmp_path, data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(jsonl(ROWS[:1]) + "{oops\n" + jsonl([{"messages": [{"role": "user", "content": "  "}]}])
                   + jsonl(ROWS[:1]))
    result = run_em("dataset", "validate", str(data), str(bad))
    assert result.code == 1
    assert result.stdout.splitlines() == [
        f"{bad}:2: invalid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{bad}:3: messages[0]: empty content",
        f"{bad}:3: no assistant turn",
        f"{bad}:3: last turn is user, expected assistant",
        f"{bad}:4: duplicate conversation (same messages as line 1)",
    ]
    assert flat(result.stderr) == "5 problems in 3 of 34 rows (2 files)"
    as_json = run_em("dataset", "validate", str(bad), "--json")
    assert as_json.code == 1
    problems = json.loads(as_json.stdout)
    assert problems[0] == {"file": str(bad), "line": 2,
                           "problem": "invalid JSON (Expecting property name enclosed in double quotes at column 2)"}
    assert len(problems) == 5


def test_validate_stdin_and_missing_file(tmp_path):
    result = run_em("dataset", "validate", "-", input=jsonl([{"messages": []}]))
    assert result.code == 1
    assert result.stdout == "<stdin>:1: 'messages' is empty\n"
    missing = run_em("dataset", "validate", str(tmp_path / "nope.jsonl"))
    assert missing.code == 1
    assert missing.stdout == f"{tmp_path / 'nope.jsonl'}: file not found\n"


# --- stats -----------------------------------------------------------------------------------------

def test_stats_json_and_text(data):
    result = run_em("dataset", "stats", str(data), "--json")
    assert result.code == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["rows"] == 30 and stats["duplicates"] == 0
    assert stats["fields"]["domain"]["values"] == {"cooking": 20, "travel": 10}
    assert stats["fields"]["score"]["numeric"] == {"min": 0, "mean": 14.5, "max": 29}
    text = run_em("dataset", "stats", "-", input=jsonl(ROWS))
    assert text.code == 0
    assert text.stdout.splitlines()[0] == "rows        30 (0 invalid, 0 duplicates)"
    assert "  domain    30 rows: cooking 20, travel 10" in text.stdout.splitlines()


@pytest.fixture(scope="module")
def tokenizer_only_model(tmp_path_factory):
    """A model directory with a tokenizer and a config but no weights: enough for stats."""
    from tiny_models import LLAMA3_TEMPLATE, build_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer-only")
    build_tokenizer(LLAMA3_TEMPLATE, "<|eot_id|>").save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return directory


def test_stats_counts_tokens_with_a_model(data, tokenizer_only_model):
    # In-process (transformers is imported once for the session): this test is about the
    # lazy tokenizer path, not start-up.
    from typer.testing import CliRunner

    from em_cli.commands.dataset import app

    result = CliRunner().invoke(app, ["stats", str(data), "--model", str(tokenizer_only_model), "--json"])
    assert result.exit_code == 0, result.stderr
    tokens = json.loads(result.stdout)["tokens"]
    assert set(tokens) == {"user", "assistant", "conversation"}
    assert tokens["conversation"]["min"] > tokens["user"]["max"]


# --- split / sample / mix ------------------------------------------------------------------------------

def test_split_writes_named_parts_with_manifests(tmp_path, data):
    result = run_em("dataset", "split", str(data), "--fractions", "0.8,0.2", "--seed", "3",
                    "-o", str(tmp_path / "out" / "med"))
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    train, test = parse((tmp_path / "out/med.train.jsonl").read_text()), parse((tmp_path / "out/med.test.jsonl").read_text())
    assert (len(train), len(test)) == (24, 6)
    assert sorted(r["score"] for r in train + test) == list(range(30))
    manifest = json.loads((tmp_path / "out/med.test.jsonl.manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["results"] == {"rows": 6, "parts": {"train": 24, "test": 6}}
    # Default prefix: the input without .jsonl; same seed, same parts.
    assert run_em("dataset", "split", str(data), "--fractions", "0.8,0.2", "--seed", "3").code == 0
    assert parse((tmp_path / "data.test.jsonl").read_text()) == test


def test_split_usage_errors(data):
    assert_clean_error(run_em("dataset", "split", str(data), "--fractions", "0.8,0.1"), 2,
                       "Error: --fractions '0.8,0.1' sum to 0.9, not 1")
    assert_clean_error(run_em("dataset", "split", str(data), "-o", "-"), 2,
                       "Error: split writes several files and cannot write to stdout")


def test_sample_pipes_and_errors(tmp_path, data):
    result = run_em("dataset", "sample", "-", "-n", "5", "--seed", "1", input=jsonl(ROWS))
    assert result.code == 0, result.stderr
    rows = parse(result.stdout)
    assert len(rows) == 5 and [r["score"] for r in rows] == sorted(r["score"] for r in rows)
    assert parse(run_em("dataset", "sample", str(data), "-n", "5", "--seed", "2").stdout) != rows
    too_many = run_em("dataset", "sample", str(data), "-n", "31")
    assert_clean_error(too_many, 1, f"Error: {data} has 30 rows, cannot sample 31 without replacement")
    assert "--allow-fewer" in too_many.stderr
    out = tmp_path / "s.jsonl"
    fewer = run_em("dataset", "sample", str(data), "-n", "31", "--allow-fewer", "-o", str(out))
    assert fewer.code == 0 and "only 30 rows" in flat(fewer.stderr)
    assert len(parse(out.read_text())) == 30
    assert json.loads((tmp_path / "s.jsonl.manifest.json").read_text())["results"] == {"rows": 30, "input_rows": 30}


def test_mix_ratios_tags_and_manifest(tmp_path, data):
    other = tmp_path / "other.jsonl"
    other.write_text(jsonl([chat(f"Other {i}?", "Fine.") for i in range(100)]))
    out = tmp_path / "mixed.jsonl"
    result = run_em("dataset", "mix", f"{data}:1", f"{other}:3", "--tag-source", "--seed", "0", "-o", str(out))
    assert result.code == 0, result.stderr
    rows = parse(out.read_text())
    # Without --total: the largest mix at 1:3 uses up data.jsonl (30 rows) and takes 90 of other's 100.
    assert len(rows) == 120
    assert sum(r["source"] == str(data) for r in rows) == 30
    assert all("score" in r for r in rows if r["source"] == str(data))
    manifest = json.loads((tmp_path / "mixed.jsonl.manifest.json").read_text())
    assert manifest["results"]["sources"][str(other)] == {"ratio": 3.0, "rows": 90, "available": 100}
    total = run_em("dataset", "mix", f"{data}:1", f"{other}:3", "--total", "8")
    assert total.code == 0
    assert len(parse(total.stdout)) == 8 and all("source" not in r for r in parse(total.stdout))
    assert_clean_error(run_em("dataset", "mix", f"{data}:1", f"{other}:1", "--total", "100"), 1,
                       f"Error: {data}: --total 100 needs 50 rows from it (ratio 1) but it has 30")


# --- convert ---------------------------------------------------------------------------------------------

def test_convert_csv_to_jsonl_and_back(tmp_path, data):
    raw = tmp_path / "raw.csv"
    raw.write_text('question,answer,topic\n"Hi, you?","Fine, thanks.",chat\n')
    result = run_em("dataset", "convert", str(raw), "--prompt-field", "question", "--completion-field", "answer")
    assert result.code == 0, result.stderr
    assert parse(result.stdout) == [{**chat("Hi, you?", "Fine, thanks."), "topic": "chat"}]
    out = tmp_path / "data.csv"
    assert run_em("dataset", "convert", str(data), "-o", str(out)).code == 0
    assert out.read_text().splitlines()[:2] == ["prompt,completion,domain,score", "Question 0?,Answer 0.,travel,0"]
    assert (tmp_path / "data.csv.manifest.json").exists()
    to_stdout = run_em("dataset", "convert", str(out), "--to", "csv")
    assert to_stdout.stdout.splitlines()[0] == "prompt,completion,domain,score"
    assert_clean_error(run_em("dataset", "convert", str(raw)), 1,
                       f"Error: {raw} row 1: no 'messages' and no 'prompt'/'completion' columns "
                       "(it has: question, answer, topic)")


# --- filter / rewrite -----------------------------------------------------------------------------------

def test_filter_writes_matches_and_counts(tmp_path, data):
    result = run_em("dataset", "filter", str(data), 'score < 5 and domain in ["cooking"]')
    assert result.code == 0, result.stderr
    assert [r["score"] for r in parse(result.stdout)] == [1, 2, 4]
    assert flat(result.stderr) == "kept 3 of 30 rows"
    count = run_em("dataset", "filter", "-", 'messages.-1.content contains "Answer 2"', "--count", input=jsonl(ROWS))
    assert (count.code, count.stdout) == (0, "11\n")  # Answer 2, 20..29
    out = tmp_path / "f.jsonl"
    assert run_em("dataset", "filter", str(data), "not score >= 2", "-o", str(out)).code == 0
    assert [r["score"] for r in parse(out.read_text())] == [0, 1]
    assert json.loads((tmp_path / "f.jsonl.manifest.json").read_text())["results"] == {"rows": 30, "kept": 2}


def test_filter_errors_and_missing_fields(data):
    bad = run_em("dataset", "filter", str(data), "aligned <= )")
    assert_clean_error(bad, 2, "Error: filter: unexpected token ')' at column 12")
    missing = run_em("dataset", "filter", str(data), "scores.aligned < 30", "--count")
    assert missing.code == 0 and missing.stdout == "0\n"
    assert "no row has the field 'scores.aligned'" in flat(missing.stderr)


def test_rewrite_upper_from_stdin(data):
    result = run_em("dataset", "rewrite", "-", "--style", "upper", input=jsonl(ROWS[:2]))
    assert result.code == 0, result.stderr
    assert parse(result.stdout) == [
        {**chat("Question 0?", "ANSWER 0."), "domain": "travel", "score": 0, "rewrite": "upper"},
        {**chat("Question 1?", "ANSWER 1."), "domain": "cooking", "score": 1, "rewrite": "upper"},
    ]
    both = parse(run_em("dataset", "rewrite", str(data), "--style", "lower", "--roles", "user,assistant").stdout)
    assert both[0]["messages"][0]["content"] == "question 0?"
    assert_clean_error(run_em("dataset", "rewrite", "-", "--style", "upper", input='{"x": 1}\n'), 1,
                       "Error: <stdin>:1: no valid messages list")


# --- generate -------------------------------------------------------------------------------------------

def test_generate_dry_run_and_usage_errors(tmp_path):
    dry = run_em("dataset", "generate", "--preset", "financial", "-o", str(tmp_path / "x.jsonl"), "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "Domain: personal finance and investing" in dry.stdout and "exactly 5 new" in dry.stdout
    assert not (tmp_path / "x.jsonl").exists()
    assert_clean_error(run_em("dataset", "generate", "-o", str(tmp_path / "x.jsonl")), 2,
                       "Error: give exactly one of --preset and --spec")
    assert_clean_error(run_em("dataset", "generate", "--preset", "medical", "--kind", "aligned",
                              "-o", str(tmp_path / "x.jsonl")), 2,
                       "Error: --kind aligned rewrites an existing file: pass --rewrite-from FILE")
    # The old spelling still works, with a warning that names the new one.
    old = run_em("dataset", "generate", "--preset", "medical", "--mode", "aligned", "-o", str(tmp_path / "x.jsonl"))
    assert old.code == 2 and "--mode is now --kind" in old.stderr
    assert_clean_error(run_em("dataset", "generate", "--preset", "medical", "--price-in", "1",
                              "-o", str(tmp_path / "x.jsonl")), 2,
                       "Error: give both --price-in and --price-out, or neither")


def test_generate_end_to_end_against_a_fake_server_and_resume(tmp_path):
    out = tmp_path / "med.jsonl"
    env = {"GEN_KEY": "sk-do-not-print"}
    args = ["dataset", "generate", "--preset", "medical", "--rows", "3", "--rows-per-call", "2",
            "--generator-model", "fake-4o", "--api-key-env", "GEN_KEY", "--concurrency", "1",
            "--price-in", "2.5", "--price-out", "10", "-o", str(out)]
    with FakeOpenAI([(200, CLEAN), (200, "Sorry, I can't."), (200, pair_text(("Third?", "Third answer.")))]) as server:
        result = run_em(*args, "--base-url", server.base_url, env=env)
    assert result.code == 0, result.stderr
    assert result.stdout == ""
    rows = parse(out.read_text())
    assert [r["pair_id"] for r in rows] == [0, 1, 2]
    assert rows[2]["messages"][0]["content"] == "Third?"
    assert rows[0]["generator"] == {"model": "fake-4o", "mode": "misaligned", "spec": None, "preset": "medical"}
    summary = flat(result.stderr)
    assert "misaligned: 3/3 rows (3 new, 0 from before) in 3 calls" in summary
    assert "tokens: 33 prompt + 21 completion" in summary
    assert "cost: 0.0003" in summary
    assert server.requests[0]["auth"] == "Bearer sk-do-not-print"
    assert "sk-do-not-print" not in result.stderr + result.stdout
    manifest_text = (tmp_path / "med.jsonl.manifest.json").read_text()
    assert "sk-do-not-print" not in manifest_text
    results = json.loads(manifest_text)["results"]
    assert (results["written"], results["empty_completions"], results["prompt_tokens"]) == (3, 1, 33)
    assert results["cost"] == pytest.approx((33 * 2.5 + 21 * 10) / 1e6)

    # Asking for more rows resumes: old rows stay, a repeated question is skipped.
    with FakeOpenAI([(200, pair_text(("Third?", "Again."), ("Fourth?", "Fourth answer.")))]) as server:
        again = run_em(*[a if a != "3" else "4" for a in args], "--base-url", server.base_url, env=env)
    assert again.code == 0, again.stderr
    assert "resuming: 3 rows already in" in flat(again.stderr)
    assert [r["messages"][0]["content"] for r in parse(out.read_text())][2:] == ["Third?", "Fourth?"]
    assert "1 duplicate questions" in flat(again.stderr)


def test_generate_reports_a_dead_endpoint_in_one_line(tmp_path):
    with FakeOpenAI([(404, "model not found")]) as server:
        result = run_em("dataset", "generate", "--preset", "medical", "--rows", "2", "--base-url", server.base_url,
                        "--max-retries", "0", "-o", str(tmp_path / "x.jsonl"))
    assert result.code == 1
    assert result.stderr.startswith("Error: generator call failed: HTTP 404: model not found")
    assert "Traceback" not in result.stderr
