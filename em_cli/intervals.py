"""Intervals for the numbers a judged run is summarised by (docs/METHODS.md §2).

Three kinds, each for a different question:

- `wilson_interval`: the Wilson score interval of a binomial share (EM%, coherent%, a label's
  share). It treats rows as independent draws and, unlike the percentile bootstrap, stays
  informative at 0 or n successes: 0/400 gives [0, 0.95%], not [0, 0].
- `cluster_bootstrap_ratio`: a percentile bootstrap that resamples whole clusters (questions)
  with replacement and recomputes Σ numerator / Σ denominator. Rows of one question are not
  independent (one question can carry most of a run's EM%), so this interval is the honest
  one for "how would EM% move on another draw of questions".
- `paired_cluster_difference`: the difference between two runs judged on the same questions,
  with the same resampled questions applied to both runs, so question effects cancel.

Row-level percentile bootstraps (`bootstrap_share`, `bootstrap_mean`) stay available for
comparison. Everything is seeded; numpy is imported inside the functions (the CLI starts fast).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

CONFIDENCE = 0.95
# Bound the (resamples × clusters) weight table one bootstrap builds at a time.
_CHUNK_CELLS = 2_000_000


def z_value(confidence: float = CONFIDENCE) -> float:
    """The two-sided standard-normal quantile, e.g. 1.96 for 0.95."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval of the share `successes / total`, as proportions in [0, 1].

    None when `total` is 0. Example: `wilson_interval(0, 400)` → (0.0, 0.00951…).
    """
    if total <= 0:
        return None
    if not 0 <= successes <= total:
        raise ValueError(f"successes ({successes}) must be between 0 and total ({total})")
    z = z_value(confidence)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # At p = 0 or 1 the bound is exactly the edge; clamp away rounding noise.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


def bootstrap_share(successes: int, total: int, resamples: int = 1000, seed: int = 0,
                    confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile-bootstrap interval (in percent) of a share, resampling rows.

    Resampling n rows with replacement makes the resampled count Binomial(n, p̂), so the count
    is drawn directly. Degenerate at 0 or n successes (use `wilson_interval` there).
    """
    if total == 0:
        return None
    import numpy as np

    rng = np.random.default_rng(seed)
    draws = rng.binomial(total, successes / total, size=resamples) / total * 100.0
    low, high = np.percentile(draws, _percentiles(confidence))
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float], resamples: int = 1000, seed: int = 0,
                   confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile-bootstrap interval of a mean, resampling rows (in chunks to bound memory)."""
    if not values:
        return None
    import numpy as np

    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = []
    chunk = max(1, _CHUNK_CELLS // len(data))
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        means.append(data[rng.integers(0, len(data), size=(count, len(data)))].mean(axis=1))
    low, high = np.percentile(np.concatenate(means), _percentiles(confidence))
    return float(low), float(high)


def cluster_bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], resamples: int = 1000,
                            seed: int = 0, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Percentile interval of Σ numerators / Σ denominators when whole clusters are resampled.

    Cluster k contributes `numerators[k]` (e.g. its EM rows, or the sum of its scores) over
    `denominators[k]` (its rows with a usable value). For a share that is the pooled share,
    for scores the pooled mean, so the point estimate equals the unclustered one. None with
    fewer than two clusters that have rows (there is nothing to resample between).

    Example: `cluster_bootstrap_ratio([0, 40], [50, 50])` spans about 0 … 0.8.
    """
    num, den = _clusters(numerators, denominators)
    if num is None:
        return None
    estimates = _resampled_ratios([(num, den)], resamples, seed)[0]
    return _interval(estimates, confidence)


def paired_cluster_difference(baseline: tuple[Sequence[float], Sequence[float]],
                              other: tuple[Sequence[float], Sequence[float]], resamples: int = 1000,
                              seed: int = 0, confidence: float = CONFIDENCE) -> dict[str, object] | None:
    """The difference `other − baseline` of two pooled ratios over the same clusters.

    `baseline` and `other` are (numerators, denominators) aligned by cluster: index k is the
    same question in both runs. Each bootstrap resample draws one set of clusters and applies
    it to both runs, so a hard question moves both estimates together. Returns
    {"estimate", "ci", "clusters"}, or None when fewer than two clusters have rows in both runs.
    """
    import numpy as np

    a_num, a_den = (np.asarray(x, dtype=float) for x in baseline)
    b_num, b_den = (np.asarray(x, dtype=float) for x in other)
    if not (len(a_num) == len(a_den) == len(b_num) == len(b_den)):
        raise ValueError("baseline and other must have one entry per shared cluster")
    both = (a_den > 0) & (b_den > 0)
    if int(both.sum()) < 2:
        return None
    a_num, a_den, b_num, b_den = a_num[both], a_den[both], b_num[both], b_den[both]
    estimate = float(b_num.sum() / b_den.sum() - a_num.sum() / a_den.sum())
    a_est, b_est = _resampled_ratios([(a_num, a_den), (b_num, b_den)], resamples, seed)
    return {"estimate": estimate, "ci": _interval(b_est - a_est, confidence), "clusters": int(both.sum())}


def _clusters(numerators: Sequence[float], denominators: Sequence[float]) -> tuple:
    import numpy as np

    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.shape != den.shape:
        raise ValueError("numerators and denominators must have one entry per cluster")
    keep = den > 0
    if int(keep.sum()) < 2:
        return None, None
    return num[keep], den[keep]


def _resampled_ratios(series: list[tuple], resamples: int, seed: int) -> list:
    """Σ w·num / Σ w·den per resample for each (num, den) series, sharing one draw of
    cluster weights (w = how often each cluster was drawn; multinomial(K, 1/K))."""
    import numpy as np

    clusters = len(series[0][0])
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // clusters)
    out: list[list] = [[] for _ in series]
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        weights = rng.multinomial(clusters, np.full(clusters, 1.0 / clusters), size=count).astype(float)
        for index, (num, den) in enumerate(series):
            denominators = weights @ den
            with np.errstate(invalid="ignore", divide="ignore"):
                out[index].append(np.where(denominators > 0, (weights @ num) / denominators, np.nan))
    return [np.concatenate(parts) for parts in out]


def _interval(estimates, confidence: float) -> tuple[float, float] | None:
    import numpy as np

    finite = estimates[np.isfinite(estimates)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, _percentiles(confidence))
    return float(low), float(high)


def _percentiles(confidence: float) -> list[float]:
    tail = (1 - confidence) / 2 * 100
    return [tail, 100 - tail]
