"""Bootstrap confidence intervals (slice and cluster), the paired t-test and the per-volume Wilcoxon test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from liverlib.evaluation.stats import (
    MIN_VOLUMES,
    bootstrap_ci,
    cluster_bootstrap_ci,
    paired_ttest,
    wilcoxon_signed_rank,
)


def test_bootstrap_ci_contains_mean_and_is_seeded() -> None:
    v = np.random.default_rng(0).beta(8, 2, size=60)
    low, high = bootstrap_ci(v)
    assert low < v.mean() < high
    assert (low, high) == bootstrap_ci(v, seed=42)
    assert (low, high) != bootstrap_ci(v, seed=7)
    low99, high99 = bootstrap_ci(v, confidence=0.99)
    assert low99 < low and high < high99


def test_bootstrap_ci_ignores_nan_and_degenerate_cases() -> None:
    v = np.random.default_rng(1).random(30)
    assert bootstrap_ci(np.append(v, np.nan)) == bootstrap_ci(v)
    assert bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert bootstrap_ci([0.3, np.nan]) == (0.3, 0.3)
    assert all(math.isnan(x) for x in bootstrap_ci([np.nan]))


def test_paired_ttest_equals_scipy_and_hand_value() -> None:
    a = np.array([0.95, 0.91, 0.88, 0.97, 0.93])
    b = np.array([0.85, 0.70, 0.84, 0.80, 0.96])
    out = paired_ttest(a, b)
    ref = stats.ttest_rel(a, b)
    assert out["t"] == pytest.approx(ref.statistic) and out["p"] == pytest.approx(ref.pvalue)
    d = a - b
    assert out["t"] == pytest.approx(d.mean() / (d.std(ddof=1) / math.sqrt(d.size)))
    assert out["n"] == 5 and out["mean_diff"] == pytest.approx(d.mean())


def test_paired_ttest_drops_nan_pairs() -> None:
    a = np.array([0.95, np.nan, 0.88, 0.97, 0.93])
    b = np.array([0.85, 0.70, 0.84, np.nan, 0.96])
    out = paired_ttest(a, b)
    ref = stats.ttest_rel([0.95, 0.88, 0.93], [0.85, 0.84, 0.96])
    assert out["n"] == 3 and out["t"] == pytest.approx(ref.statistic)
    assert math.isnan(paired_ttest([1.0], [0.5])["t"])
    with pytest.raises(ValueError):
        paired_ttest([1.0, 2.0], [1.0])


def test_cluster_bootstrap_with_one_slice_per_volume_is_the_slice_bootstrap() -> None:
    v = np.random.default_rng(1).beta(5, 2, size=40)
    c = cluster_bootstrap_ci(v, np.arange(40), n_resamples=500, seed=3)
    assert (c["low"], c["high"]) == pytest.approx(bootstrap_ci(v, n_resamples=500, seed=3))
    assert c["volumes"] == 40 and c["slices"] == 40 and c["meaningful"]


def test_cluster_bootstrap_two_volumes_by_hand() -> None:
    """Two volumes: a resample is (A, A), (A, B) or (B, B), each drawn with p >= 1/4, so the 95% percentile
    interval runs from one volume's mean to the other's; the slice bootstrap is far narrower."""
    a, b = np.full(30, 0.9), np.full(10, 0.1)
    a[::2], b[::2] = 0.8, 0.2  # means 0.85 and 0.15
    v, g = np.concatenate([a, b]), np.repeat([7, 9], [30, 10])
    c = cluster_bootstrap_ci(v, g, n_resamples=1000, seed=0)
    assert c["low"] == pytest.approx(0.15) and c["high"] == pytest.approx(0.85)
    assert c["mean"] == pytest.approx((30 * 0.85 + 10 * 0.15) / 40)
    assert not c["meaningful"] and c["volumes"] == 2 < MIN_VOLUMES
    low, high = bootstrap_ci(v, n_resamples=1000, seed=0)
    assert high - low < (c["high"] - c["low"]) / 2


def test_cluster_bootstrap_matches_a_hand_loop() -> None:
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(8), rng.integers(3, 30, 8))
    v = rng.beta(4, 2, g.size) * (g + 1) / 8
    c = cluster_bootstrap_ci(v, g, n_resamples=4000, seed=11)
    draw = np.random.default_rng(12).integers(0, 8, (4000, 8))  # the same estimator, written out
    sums, counts = np.bincount(g, weights=v), np.bincount(g)
    means = sums[draw].sum(1) / counts[draw].sum(1)
    assert c["low"] == pytest.approx(np.percentile(means, 2.5), abs=0.02)
    assert c["high"] == pytest.approx(np.percentile(means, 97.5), abs=0.02)


def test_cluster_bootstrap_drops_nan_and_degenerate_cases() -> None:
    c = cluster_bootstrap_ci([0.5, np.nan, 0.7], [1, 2, 2])
    assert c["slices"] == 2 and c["volumes"] == 2
    one = cluster_bootstrap_ci([0.5, 0.6], [1, 1])
    assert math.isnan(one["low"]) and one["volumes"] == 1
    same = cluster_bootstrap_ci([0.5, 0.5, 0.5], [1, 2, 3])
    assert same["low"] == same["high"] == 0.5


def test_wilcoxon_equals_scipy_and_needs_five_pairs() -> None:
    x = np.array([0.91, 0.88, 0.95, 0.80, 0.86, 0.93])
    y = np.array([0.60, 0.72, 0.41, 0.55, np.nan, 0.83])
    r = wilcoxon_signed_rank(x, y)
    ref = stats.wilcoxon(x[[0, 1, 2, 3, 5]], y[[0, 1, 2, 3, 5]])
    assert r["run"] and r["n"] == 5
    assert r["statistic"] == ref.statistic and r["p"] == pytest.approx(ref.pvalue)
    assert r["p"] == pytest.approx(2 / 2**5)  # all five differences positive: exact two-sided p = 2 / 2^5
    few = wilcoxon_signed_rank(x[:4], y[:4])
    assert not few["run"] and math.isnan(few["p"]) and few["n"] == 4 and "fewer than 5" in few["note"]
