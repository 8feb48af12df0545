"""Bootstrap confidence intervals and the paired t-test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from liverlib.stats import bootstrap_ci, paired_ttest


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
