"""Intervals (em_cli.intervals) against plain reference computations and synthetic data."""

from __future__ import annotations

import math

import pytest

from em_cli.intervals import (bootstrap_share, cluster_bootstrap_ratio, paired_cluster_difference, wilson_interval,
                               z_value)

Z95 = 1.959963984540054  # the standard-normal 97.5% quantile


def reference_wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927), written out as in textbooks."""
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n)


def test_wilson_at_zero_of_400_is_not_degenerate():
    low, high = wilson_interval(0, 400)
    assert low == 0.0
    assert high == pytest.approx(reference_wilson(0, 400)[1], abs=1e-12)
    assert high == pytest.approx(Z95 ** 2 / (400 + Z95 ** 2), abs=1e-12)  # the closed form at k = 0
    assert 0.0095 < high < 0.0096  # ≈ 0.95%: "no EM seen in 400 rows" still allows up to ~1%
    assert bootstrap_share(0, 400) == (0.0, 0.0)  # what a row bootstrap says instead


@pytest.mark.parametrize(("k", "n"), [(1, 10), (30, 100), (7, 400), (399, 400), (50, 50)])
def test_wilson_matches_the_reference_formula(k, n):
    low, high = wilson_interval(k, n)
    ref_low, ref_high = reference_wilson(k, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-12) and high == pytest.approx(min(ref_high, 1.0), abs=1e-12)
    assert low <= k / n <= high


def test_wilson_edges():
    assert wilson_interval(0, 0) is None
    assert wilson_interval(50, 50)[1] == 1.0
    assert z_value(0.95) == pytest.approx(Z95)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_question_bootstrap_is_wider_than_the_row_bootstrap_with_strong_question_effects():
    # 20 questions × 50 rows: half of the questions carry all the EM (60% each), half none.
    successes = [30] * 10 + [0] * 10
    rows = [50] * 20
    total_k, total_n = sum(successes), sum(rows)
    assert total_k / total_n == 0.3
    row_low, row_high = bootstrap_share(total_k, total_n, resamples=2000, seed=0)
    wilson_low, wilson_high = wilson_interval(total_k, total_n)
    low, high = cluster_bootstrap_ratio(successes, rows, resamples=2000, seed=0)
    assert low < 0.3 < high
    cluster_width = (high - low) * 100
    assert cluster_width > 2 * (row_high - row_low)
    assert cluster_width > 2 * (wilson_high - wilson_low) * 100
    # Without question effects the two agree roughly.
    even_low, even_high = cluster_bootstrap_ratio([15] * 20, rows, resamples=2000, seed=0)
    assert (even_high - even_low) * 100 < 1.5 * (row_high - row_low)


def test_question_bootstrap_of_means_and_its_edges():
    # Means are ratios too: Σ scores / Σ rows per question.
    low, high = cluster_bootstrap_ratio([10 * 90.0, 10 * 10.0, 10 * 50.0], [10, 10, 10], resamples=500)
    assert low < 50.0 < high
    assert cluster_bootstrap_ratio([3], [10]) is None  # one question: nothing to resample between
    assert cluster_bootstrap_ratio([3, 0], [10, 0]) is None  # the other has no rows
    assert cluster_bootstrap_ratio([3, 4], [10, 10], seed=1) == cluster_bootstrap_ratio([3, 4], [10, 10], seed=1)


def test_paired_difference_cancels_question_effects():
    # Ten questions of very different difficulty; the other run is 10 points above on each.
    base = [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    other = [b + 5 for b in base]
    rows = [50] * 10
    paired = paired_cluster_difference((base, rows), (other, rows), resamples=2000, seed=0)
    assert paired["estimate"] == pytest.approx(sum(other) / 500 - sum(base) / 500) == pytest.approx(0.1)
    low, high = paired["ci"]
    assert paired["clusters"] == 10
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)  # the shift is identical on every question
    # Unpaired, question effects dominate: each run's own interval is far wider than the shift.
    a_low, a_high = cluster_bootstrap_ratio(base, rows, resamples=2000, seed=0)
    assert a_high - a_low > 0.15


def test_paired_difference_with_noise_has_an_interval_around_the_estimate():
    base = [2, 40, 8, 30, 1, 25]
    other = [6, 41, 15, 33, 9, 26]
    rows = [40, 40, 40, 40, 40, 40]
    paired = paired_cluster_difference((base, rows), (other, rows), resamples=2000, seed=3)
    low, high = paired["ci"]
    assert low < paired["estimate"] < high and low > 0  # every question moved up
    assert paired_cluster_difference(([1], [4]), ([2], [4])) is None
    with pytest.raises(ValueError):
        paired_cluster_difference(([1, 2], [4, 4]), ([2], [4]))
