"""em_cli.datasets.sampling: exact counts, seeded determinism, errors that say what to do."""

from __future__ import annotations

import pytest

from em_cli.datasets.sampling import (
    allocate,
    mix_counts,
    mix_records,
    parse_fractions,
    parse_mix_source,
    sample_records,
    split_names,
    split_paths,
    split_records,
)
from em_cli.errors import DataError, UsageError

ROWS = [{"i": i} for i in range(20)]


def ids(rows) -> list[int]:
    return [r["i"] for r in rows]


def test_allocate_largest_remainder():
    assert allocate(10, [0.9, 0.1]) == [9, 1]
    assert allocate(10, [1, 1, 1]) == [4, 3, 3]
    assert allocate(7, [0.5, 0.5]) == [4, 3]
    assert allocate(13, [1, 12]) == [1, 12]
    assert allocate(3, [0.7, 0.2, 0.1]) == [2, 1, 0]
    assert sum(allocate(1001, [0.33, 0.33, 0.34])) == 1001


def test_parse_fractions():
    assert parse_fractions("0.8,0.1,0.1") == [0.8, 0.1, 0.1]
    with pytest.raises(UsageError, match=r"sum to 0\.9, not 1"):
        parse_fractions("0.8,0.1")
    with pytest.raises(UsageError, match="greater than 0"):
        parse_fractions("1.0,0")
    with pytest.raises(UsageError, match="bad --fractions"):
        parse_fractions("0.5,half")
    with pytest.raises(UsageError, match="at least two"):
        parse_fractions("1")


def test_split_names_and_paths():
    assert split_names(None, 2) == ["train", "test"]
    assert split_names(None, 3) == ["train", "val", "test"]
    assert split_names("a,b", 2) == ["a", "b"]
    with pytest.raises(UsageError, match="need --names"):
        split_names(None, 4)
    with pytest.raises(UsageError, match="2 names for 3 fractions"):
        split_names("a,b", 3)
    with pytest.raises(UsageError, match="repeats"):
        split_names("a,a", 2)
    with pytest.raises(UsageError, match="bad part name 'x/y'"):
        split_names("x/y,b", 2)
    assert [str(p) for p in split_paths("data/med.jsonl", ["train", "test"])] == [
        "data/med.train.jsonl", "data/med.test.jsonl"]
    assert [str(p) for p in split_paths("out/med", ["a"])] == ["out/med.a.jsonl"]


def test_split_is_a_seeded_partition():
    parts = split_records(ROWS, [0.7, 0.2, 0.1], seed=0)
    assert [len(p) for p in parts] == [14, 4, 2]
    assert sorted(ids(parts[0] + parts[1] + parts[2])) == list(range(20))
    again = split_records(ROWS, [0.7, 0.2, 0.1], seed=0)
    assert [ids(p) for p in again] == [ids(p) for p in parts]
    other = split_records(ROWS, [0.7, 0.2, 0.1], seed=1)
    assert [ids(p) for p in other] != [ids(p) for p in parts]
    assert ids(parts[0]) != list(range(14))  # shuffled, not a head/tail cut


def test_sample_seeded_without_replacement_in_file_order():
    first = sample_records(ROWS, 5, seed=0)
    assert len(set(ids(first))) == 5
    assert ids(first) == sorted(ids(first))
    assert sample_records(ROWS, 5, seed=0) == first
    assert sample_records(ROWS, 5, seed=1) != first
    with pytest.raises(DataError, match="data.jsonl has 20 rows, cannot sample 21") as info:
        sample_records(ROWS, 21, seed=0, name="data.jsonl")
    assert "--allow-fewer" in info.value.hint
    assert sample_records(ROWS, 21, seed=0, allow_fewer=True) == ROWS


def test_parse_mix_source():
    assert parse_mix_source("a.jsonl:12") == parse_mix_source("a.jsonl:12.0")
    assert parse_mix_source("a.jsonl:0.5").ratio == 0.5
    assert parse_mix_source("a.jsonl").ratio == 1.0
    assert parse_mix_source("dir:x/a.jsonl").path == "dir:x/a.jsonl"
    with pytest.raises(UsageError, match="ratios must be positive"):
        parse_mix_source("a.jsonl:0")
    with pytest.raises(UsageError, match="no file"):
        parse_mix_source(":3")


def test_mix_counts_with_and_without_total():
    assert mix_counts([100, 1000], [1, 12], total=130) == [10, 120]
    # Without a total: the largest output every source can supply at these proportions.
    assert mix_counts([10, 1000], [1, 12]) == [10, 120]
    assert mix_counts([1000, 60], [1, 12]) == [5, 60]
    assert mix_counts([3, 3], [1, 1]) == [3, 3]
    # 7 rows at 1:1 would need 4+3; with 3 and 10 available, 6 (3+3) is the most.
    assert mix_counts([3, 10], [1, 1]) == [3, 3]
    with pytest.raises(DataError, match=r"small\.jsonl: --total 50 needs 25 rows from it \(ratio 1\) but it has 10"):
        mix_counts([10, 100], [1, 1], total=50, names=["small.jsonl", "big.jsonl"])
    with pytest.raises(DataError, match="empty.jsonl has no rows"):
        mix_counts([0, 10], [1, 1], names=["empty.jsonl", "b"])


def test_mix_records_seeded_tagged_and_keeps_keys():
    a = [{"i": i, "k": "a"} for i in range(10)]
    b = [{"i": i, "k": "b"} for i in range(30)]
    rows, counts = mix_records([("a.jsonl", a), ("b.jsonl", b)], [1, 3], total=20, seed=0, tag_source=True)
    assert counts == [5, 15]
    assert len(rows) == 20
    assert sum(r["source"] == "a.jsonl" for r in rows) == 5
    assert all(r["k"] == r["source"][0] for r in rows)
    assert len({(r["k"], r["i"]) for r in rows}) == 20  # without replacement
    assert "source" not in a[0]  # inputs are not modified
    again, _ = mix_records([("a.jsonl", a), ("b.jsonl", b)], [1, 3], total=20, seed=0, tag_source=True)
    assert again == rows
    other, _ = mix_records([("a.jsonl", a), ("b.jsonl", b)], [1, 3], total=20, seed=1, tag_source=True)
    assert other != rows
    untagged, _ = mix_records([("a.jsonl", a), ("b.jsonl", b)], [1, 3], total=20, seed=0)
    assert all("source" not in r for r in untagged)
    assert [r["k"] for r in rows] != sorted(r["k"] for r in rows)  # shuffled together
    with pytest.raises(DataError, match="already has a 'source' key"):
        mix_records([("a", [{"source": "x"}])], [1], total=1, seed=0, tag_source=True)
