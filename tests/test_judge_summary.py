"""EM%, coherent% and metric summaries (em_cli.judging.summary) on hand-made rows."""

from __future__ import annotations

import pytest

from em_cli.errors import UsageError
from em_cli.judging.summary import (SummaryOptions, bootstrap_mean, bootstrap_share, is_em, summarise,
                                    summarise_rows)


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
