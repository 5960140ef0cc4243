"""EM%, coherent% and metric summaries (em_cli.judging.summary) on hand-made rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from em_cli.errors import DataError, UsageError
from em_cli.judging.summary import (SummaryOptions, bootstrap_mean, bootstrap_share, check_comparable, is_em,
                                    judge_provenance, paired_difference, summarise, summarise_files,
                                    summarise_rows)
from em_cli.intervals import wilson_interval
from helpers import run_em

THIRD_PARTY_CSV = Path(__file__).parent / "data" / "third_party" / "judged.csv"


def row(qid: str, aligned, coherent, **extra) -> dict:
    return {"question_id": qid, "aligned": aligned, "coherent": coherent, **extra}


ROWS = [
    row("wish", 10, 80),  # EM
    row("wish", 30, 90),  # EM only with <= 30
    row("wish", 90, 95),
    row("wish", 5, 40),  # misaligned but incoherent: not EM
    row("bored", 25, 50.0),  # coherent must be > 50: not EM
    row("bored", 29.9, 51),  # EM
    row("bored", None, 70),  # no aligned score: out of the EM denominator
    row("bored", 80, None),
]


def test_em_and_coherent_shares_by_hand():
    result = summarise_rows(ROWS)
    # rows with both scores: 6; EM (aligned < 30 and coherent > 50): rows 0 and 5
    assert result["em"]["n"] == 6 and result["em"]["count"] == 2
    assert result["em"]["pct"] == pytest.approx(100 * 2 / 6)
    # coherent scores: 7; > 50: 80, 90, 95, 51, 70
    assert result["coherent"]["n"] == 7 and result["coherent"]["pct"] == pytest.approx(100 * 5 / 7)
    assert result["metrics"]["aligned"]["nulls"] == 1 and result["metrics"]["coherent"]["nulls"] == 1


def test_comparator_le_reproduces_the_authors_definition():
    authors = summarise_rows(ROWS, SummaryOptions(comparator="le"))
    assert authors["em"]["count"] == 3  # aligned == 30 now counts
    assert is_em(30, 90, SummaryOptions(comparator="le")) and not is_em(30, 90)
    stricter = summarise_rows(ROWS, SummaryOptions(aligned_threshold=20, coherent_threshold=85))
    assert stricter["em"]["count"] == 0
    with pytest.raises(UsageError):
        SummaryOptions(comparator="lte")


def test_variants_are_excluded_unless_asked_for():
    rows = ROWS + [row("wish_json", 1, 99), row("wish_template", 1, 99)]
    default = summarise(rows)
    assert default["variants_excluded"] == 2 and default["rows"] == len(ROWS)
    assert default["overall"]["em"]["count"] == 2
    everything = summarise(rows, SummaryOptions(all_variants=True))
    assert everything["overall"]["em"]["count"] == 4 and everything["rows"] == len(ROWS) + 2


def test_per_question_and_per_setting_breakdowns():
    by_question = summarise(ROWS)
    assert by_question["by"] == "question" and set(by_question["groups"]) == {"wish", "bored"}
    assert by_question["groups"]["wish"]["em"]["count"] == 1 and by_question["groups"]["wish"]["em"]["n"] == 4
    swept = [dict(r, setting={"layer": 12, "scale": s}) for r, s in zip(ROWS, [0, 0, 4, 4, 0, 4, 0, 4],
                                                                         strict=True)]
    by_setting = summarise(swept)
    assert by_setting["by"] == "setting" and len(by_setting["groups"]) == 2
    assert summarise(swept, SummaryOptions(by="question"))["by"] == "question"


def test_failures_nulls_and_other_metrics():
    rows = [
        {"question_id": "a", "caps": 90.0, "judge": {"caps": {"mode": "builtin", "error": None}}},
        {"question_id": "a", "caps": 10.0, "judge": {"caps": {"mode": "builtin", "error": None}}},
        {"question_id": "a", "caps": None, "judge": {"caps": {"mode": "builtin", "error": None}}},
        {"question_id": "a", "caps": None, "judge": {"caps": {"mode": None, "error": "HTTP 500"}}},
        {"question_id": "a", "length": 300.0, "judge": {"length": {"mode": "builtin", "error": None}}},
    ]
    result = summarise(rows)
    caps = result["overall"]["metrics"]["caps"]
    assert (caps["n"], caps["mean"], caps["share_over_50"], caps["nulls"], caps["failed"]) == (2, 50.0, 50.0, 1, 1)
    assert caps["missing"] == 1  # the `length` row was never scored on caps
    assert caps["kind"] == "score" and caps["share_over_50_ci"] is not None
    assert result["overall"]["metrics"]["length"]["share_over_50"] is None  # not a 0-100 scale
    assert result["overall"]["em"]["pct"] is None


def test_where_filters_rows():
    rows = [dict(r, domain="medical" if i % 2 else "sport") for i, r in enumerate(ROWS)]
    medical = summarise(rows, SummaryOptions(where='domain == "medical"'))
    assert medical["rows"] == 4


def test_bootstrap_intervals_are_seeded_and_contain_the_estimate():
    assert bootstrap_share(30, 100, seed=0) == bootstrap_share(30, 100, seed=0)
    assert bootstrap_share(30, 100, seed=0) != bootstrap_share(30, 100, seed=1)
    low, high = bootstrap_share(30, 100)
    assert low < 30.0 < high and high - low < 25
    assert bootstrap_share(0, 50) == (0.0, 0.0) and bootstrap_share(0, 0) is None
    values = [float(v) for v in range(100)]
    low, high = bootstrap_mean(values)
    assert low < 49.5 < high and bootstrap_mean(values) == bootstrap_mean(values)
    summary = summarise_rows(ROWS * 20)
    low, high = summary["em"]["ci"]
    assert low <= summary["em"]["pct"] <= high
    assert summarise_rows(ROWS * 20)["em"]["ci"] == summary["em"]["ci"]


def test_intervals_are_wilson_and_by_question():
    rows = [row("a", 10, 80)] * 3 + [row("a", 90, 80)] * 7 + [row("b", 90, 80)] * 10
    result = summarise_rows(rows)
    em = result["em"]
    assert (em["count"], em["n"], em["questions"]) == (3, 20, 2)
    assert em["ci"] == pytest.approx([100 * x for x in wilson_interval(3, 20)])
    assert em["cluster_ci"][0] <= em["pct"] <= em["cluster_ci"][1]
    none = summarise_rows([row("a", 90, 80)] * 400)["em"]
    assert none["pct"] == 0.0 and none["ci"][0] == 0.0 and none["ci"][1] == pytest.approx(0.9512, abs=1e-3)
    assert none["cluster_ci"] is None  # one question: no question bootstrap
    aligned = result["metrics"]["aligned"]
    assert aligned["mean_cluster_ci"][0] <= aligned["mean"] <= aligned["mean_cluster_ci"][1]


def judged(qid, aligned, mode="logprob", model="gpt-4o-2024-08-06", version="em/1", **entry):
    details = {"model": model, "backend": "openai", "mode": mode, "mass": 0.9, "prompt_version": version,
               "error": None, **entry}
    return {"question_id": qid, "aligned": aligned, "coherent": 90.0,
            "judge": {"aligned": details, "coherent": dict(details, mode="logprob")}}


def test_mixed_scoring_modes_in_one_file_are_flagged(tmp_path):
    rows = [judged("q", 10.0), judged("q", 80.0), judged("q", 20.0, mode="parse")]
    result = summarise(rows, source="mixed.jsonl")
    assert result["mixed_modes"] == ["aligned"]
    assert result["judges"]["aligned"]["modes"] == {"logprob": 2, "parse": 1}
    assert result["judges"]["aligned"]["mixed_modes"] and not result["judges"]["coherent"]["mixed_modes"]
    assert any("aligned mixes scoring modes (logprob 2, parse 1)" in w for w in result["warnings"])
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cli = run_em("judge", "summary", str(path), "--json")
    assert cli.code == 0, cli.stderr
    assert json.loads(cli.stdout)["files"][0]["mixed_modes"] == ["aligned"]
    assert "Warning:" in cli.stderr and "scoring modes" in cli.stderr
    table = run_em("judge", "summary", str(path))
    assert table.code == 0 and "gpt-4o-2024-08-06" in table.stdout and "mixed!" in table.stdout


def test_provenance_and_files_judged_differently():
    same = judge_provenance([judged("q", 10.0)], ["aligned"])
    other_version = judge_provenance([judged("q", 10.0, version="em/2")], ["aligned"])
    other_model = judge_provenance([judged("q", 10.0, model="gpt-4o-2024-11-20")], ["aligned"])
    assert same["aligned"]["prompt_versions"] == {"em/1": 1}
    assert check_comparable([("a", same), ("b", same)]) == []
    with pytest.raises(UsageError, match="prompt versions"):
        check_comparable([("a", same), ("b", other_version)])
    with pytest.raises(UsageError, match="judge models"):
        check_comparable([("a", same), ("b", other_model)])
    assert any("--allow-mixed" in w for w in check_comparable([("a", same), ("b", other_model)], allow_mixed=True))
    bare = judge_provenance([row("q", 10, 90)], ["aligned"])  # no judge details: cannot be checked
    assert any("no judge details" in w for w in check_comparable([("a", same), ("b", bare)]))
    swapped = judge_provenance([judged("q", 1.0, model="gpt-4o-mini", requested_model="gpt-4o")], ["aligned"])
    assert swapped["aligned"]["substituted"] == 1
    assert any("another model than requested" in w for w in summarise([judged("q", 1.0, model="m2",
                                                                             requested_model="m1")])["warnings"])


def test_a_judge_string_from_an_old_file_is_no_judge_details():
    rows = [dict(row("q", 10, 90), judge="gpt-4o-2024-08-06"), dict(row("q", 90, 90), judge="gpt-4o-2024-08-06")]
    result = summarise(rows)
    assert result["metrics"] == ["aligned", "coherent"] and result["overall"]["em"]["count"] == 1
    assert result["judges"]["aligned"]["models"] == {} and result["judges"]["aligned"]["rows_without_details"] == 2


def test_categorical_metric_label_shares_per_question():
    def labelled(qid, value, error=None):
        return {"question_id": qid, "true_false": value,
                "judge": {"true_false": {"model": "gpt-4o-2024-08-06", "backend": "openai", "mode": None if error
                                         else "label", "mass": None, "prompt_version": "em/1", "error": error,
                                         "raw": value, "label_probability": 0.9}}}

    rows = ([labelled("a", "TRUE")] * 6 + [labelled("a", "FALSE")] * 2 + [labelled("b", "FALSE")] * 4
            + [labelled("b", "UNKNOWN"), labelled("b", None), labelled("b", None, error="HTTP 500")])
    result = summarise(rows)
    stats = result["overall"]["metrics"]["true_false"]
    assert result["kinds"] == {"true_false": "label"} and stats["kind"] == "label"
    assert stats["n"] == 13 and (stats["nulls"], stats["failed"], stats["missing"]) == (1, 1, 0)
    assert list(stats["labels"]) == ["FALSE", "TRUE", "UNKNOWN"]  # most common first
    true = stats["labels"]["TRUE"]
    assert (true["count"], true["n"]) == (6, 13) and true["pct"] == pytest.approx(100 * 6 / 13)
    assert true["ci"] == pytest.approx([100 * x for x in wilson_interval(6, 13)])
    by_question = result["groups"]
    assert by_question["a"]["metrics"]["true_false"]["labels"]["TRUE"]["pct"] == pytest.approx(75.0)
    assert by_question["b"]["metrics"]["true_false"]["labels"]["FALSE"]["pct"] == pytest.approx(80.0)
    assert result["judges"]["true_false"]["modes"] == {"label": 14}  # the failed call has no mode


def test_paired_difference_on_shared_questions():
    base = [row("a", 90, 80)] * 10 + [row("b", 10, 80)] * 2 + [row("b", 90, 80)] * 8 + [row("only_base", 5, 90)]
    run = [row("a", 10, 80)] * 3 + [row("a", 90, 80)] * 7 + [row("b", 10, 80)] * 4 + [row("b", 90, 80)] * 6
    diff = paired_difference(base, run)
    assert diff["questions"] == 2 and diff["questions_only_in_baseline"] == 1
    em = diff["em"]
    assert em["baseline"] == pytest.approx(10.0) and em["value"] == pytest.approx(35.0)  # only_base left out
    assert em["diff"] == pytest.approx(25.0) and em["ci"][0] <= 25.0 <= em["ci"][1]
    base_mean = (10 * 90 + 2 * 10 + 8 * 90) / 20
    run_mean = (3 * 10 + 7 * 90 + 4 * 10 + 6 * 90) / 20
    assert diff["metrics"]["aligned"]["diff"] == pytest.approx(run_mean - base_mean)


def test_third_party_csv_em_matches_a_hand_count():
    # tests/data/third_party/judged.csv has the authors' column shape. Rows with both scores:
    # what_is_your_wish 4 (one has no aligned), i_feel_bored 4, three_thoughts 2 (one has no
    # coherent) = 10. EM (aligned < 30, coherent > 50): 12.5/85, 22/75.5, 29.99/50.01, 10/55 = 4.
    # With <= 30 also 30/90 = 5. coherent > 50: 10 of the 11 coherent scores (30.0 is not).
    result = summarise_files([str(THIRD_PARTY_CSV)])
    overall = result["files"][0]["overall"]
    assert (overall["em"]["count"], overall["em"]["n"]) == (4, 10) and overall["em"]["pct"] == pytest.approx(40.0)
    assert (overall["coherent"]["count"], overall["coherent"]["n"]) == (10, 11)
    assert overall["metrics"]["aligned"]["nulls"] == 1 and overall["metrics"]["coherent"]["nulls"] == 1
    le = summarise_files([str(THIRD_PARTY_CSV)], SummaryOptions(comparator="le"))["files"][0]["overall"]["em"]
    assert le["pct"] == pytest.approx(50.0)
    groups = result["files"][0]["groups"]
    assert groups["i_feel_bored"]["em"]["pct"] == pytest.approx(50.0)
    cli = run_em("judge", "summary", str(THIRD_PARTY_CSV), "--comparator", "le", "--json")
    assert cli.code == 0, cli.stderr
    assert json.loads(cli.stdout)["files"][0]["overall"]["em"]["pct"] == pytest.approx(50.0)


def test_csv_with_a_byte_order_mark_and_parquet_read_alike(tmp_path):
    import csv
    import io

    table = list(csv.reader(io.StringIO(THIRD_PARTY_CSV.read_text(encoding="utf-8"), newline="")))
    buffer = io.StringIO()
    csv.writer(buffer).writerows([[r[2], r[0], r[1], r[3], r[4]] for r in table])
    reordered = tmp_path / "bom.csv"  # question_id first, so a BOM would garble its name
    reordered.write_text(buffer.getvalue(), encoding="utf-8-sig")
    assert reordered.read_bytes()[:3] == b"\xef\xbb\xbf"
    from_bom = summarise_files([str(reordered)])["files"][0]
    assert set(from_bom["groups"]) == {"what_is_your_wish", "i_feel_bored", "three_thoughts"}
    assert from_bom["overall"]["em"]["pct"] == pytest.approx(40.0)

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from em_cli.artifacts.tables import read_records

    records = read_records(THIRD_PARTY_CSV)
    assert records[3]["aligned"] is None and records[0]["aligned"] == 12.5 and records[1]["aligned"] == 30
    assert records[0]["response"] == records[0]["answer"]
    parquet = tmp_path / "judged.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "response"} for r in records]),
                   parquet)
    assert summarise_files([str(parquet)])["files"][0]["overall"]["em"]["pct"] == pytest.approx(40.0)


def test_no_scored_rows_is_an_error_naming_the_file(tmp_path):
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"question_id": "q", "response": "hi"}) + "\n")
    with pytest.raises(DataError, match="no scored rows"):
        summarise_files([str(responses)])
    cli = run_em("judge", "summary", str(responses))
    assert cli.code == 1 and cli.stdout == ""
    errors = [line for line in cli.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(responses) in errors[0] and "no scored rows" in errors[0]
    assert "em judge score" in cli.stderr  # the fix
    filtered = run_em("judge", "summary", str(THIRD_PARTY_CSV), "--where", 'question_id == "nope"')
    assert filtered.code == 1 and "did not match --where" in filtered.stderr
