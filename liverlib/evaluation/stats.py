"""Statistics of test scores (docs/study.md §7): bootstrap intervals and paired tests, per slice and per volume.

The paper resampled slices and t-tested slices (:func:`bootstrap_ci`, :func:`paired_ttest`: kept,
labelled as its method). Slices of one patient are not independent, so the unit that was sampled is
the volume: :func:`cluster_bootstrap_ci` resamples volumes and keeps all their slices, and
:func:`wilcoxon_signed_rank` pairs per-volume scores. With fewer than :data:`MIN_VOLUMES` test
volumes no interval over volumes is meaningful and the per-volume test is not run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

MIN_VOLUMES: int = 5
"""Fewest test volumes for which an interval or a test over volumes is reported as meaningful."""


def _finite(values: Any) -> np.ndarray:
    """1D float64 array of the non-NaN values."""
    v = np.asarray(values, np.float64).ravel()
    return v[~np.isnan(v)]


def bootstrap_ci(
    values: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 42,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean (docs/study.md §7: 1,000 seeded resamples, 95%).

    NaNs (e.g. slices a ``"nan"`` empty rule left undefined) are dropped before resampling, so the
    interval is that of the ``nanmean``. Runs ``scipy.stats.bootstrap`` with a
    ``numpy.random.default_rng(seed)``: the same inputs and seed give the same interval.

    Args:
        values: per-slice scores, any shape (flattened), float.
        n_resamples: bootstrap resamples.
        confidence: confidence level in (0, 1).
        seed: seed of the resampling generator.
        method: ``"percentile"``, ``"basic"`` or ``"BCa"`` (scipy's names).

    Returns:
        ``(low, high)``; ``(v, v)`` when all values are equal or only one is left (scipy cannot
        resample a degenerate sample), ``(nan, nan)`` when none is left.
    """
    v = _finite(values)
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1 or np.all(v == v[0]):
        return float(v[0]), float(v[0])
    res = stats.bootstrap(
        (v,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method=method,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _pairs(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Paired scores as float64 vectors with every pair holding a NaN dropped; ValueError if they do not pair up."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"a and b must pair up, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    return x[keep], y[keep]


def paired_ttest(a: Any, b: Any) -> dict[str, float | int]:
    """Paired two-sided t-test of ``a`` vs ``b`` (docs/study.md §7: liver vs tumor Dice over test slices).

    Pairs where either value is NaN are dropped first (``nan_policy`` by hand, so ``n`` is known).

    Args:
        a: scores, shape (N,), float.
        b: scores of the same N slices.

    Returns:
        ``{"t", "p", "n" (pairs used), "mean_diff" (mean of a − b)}``; t and p are NaN with < 2 pairs.
    """
    x, y = _pairs(a, b)
    n = int(x.size)
    mean_diff = float(np.mean(x - y)) if n else float("nan")
    if n < 2:
        return {"t": float("nan"), "p": float("nan"), "n": n, "mean_diff": mean_diff}
    res = stats.ttest_rel(x, y)
    return {"t": float(res.statistic), "p": float(res.pvalue), "n": n, "mean_diff": mean_diff}


def cluster_bootstrap_ci(
    values: Any,
    clusters: Any,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 42,
) -> dict[str, Any]:
    """Cluster (volume) bootstrap interval of the pooled slice mean: resample volumes, keep their slices.

    Each resample draws as many volumes as there are, with replacement, and takes the mean over every
    slice of the drawn volumes (a volume drawn twice counts twice). NaN slices are dropped first, and
    a volume left with no slice is dropped. Runs ``scipy.stats.bootstrap`` (percentile) on the volume
    indices with a ``numpy.random.default_rng(seed)``; with one slice per volume it is the ordinary
    bootstrap of :func:`bootstrap_ci`.

    Args:
        values: per-slice scores, shape (N,), float.
        clusters: volume id of each slice, shape (N,).
        n_resamples: bootstrap resamples.
        confidence: confidence level in (0, 1).
        seed: seed of the resampling generator.

    Returns:
        ``{"low", "high", "mean", "volumes", "slices", "meaningful" (volumes >= MIN_VOLUMES), "method",
        "resamples", "seed"}``; low/high NaN with fewer than 2 volumes.
    """
    v = np.asarray(values, np.float64).ravel()
    g = np.asarray(clusters).ravel()
    if v.shape != g.shape:
        raise ValueError(f"values and clusters must pair up, got {v.shape} and {g.shape}")
    keep = ~np.isnan(v)
    v, g = v[keep], g[keep]
    ids, inv = np.unique(g, return_inverse=True)
    sums = np.bincount(inv, weights=v, minlength=ids.size)
    counts = np.bincount(inv, minlength=ids.size).astype(np.float64)
    out: dict[str, Any] = {"mean": float(v.mean()) if v.size else float("nan"), "volumes": int(ids.size),
                           "slices": int(v.size), "meaningful": bool(ids.size >= MIN_VOLUMES),
                           "method": "cluster bootstrap over test volumes (percentile), all slices of a drawn volume kept",
                           "resamples": n_resamples, "seed": seed}  # fmt: skip
    low = high = float("nan")
    if ids.size >= 2:
        means = sums / counts
        if np.all(means == means[0]):
            low = high = float(means[0])
        else:

            def pooled(idx: np.ndarray, axis: int = -1) -> np.ndarray:
                idx = idx.astype(np.int64)
                return sums[idx].sum(axis=axis) / counts[idx].sum(axis=axis)

            res = stats.bootstrap((np.arange(ids.size),), pooled, n_resamples=n_resamples, confidence_level=confidence,
                                  method="percentile", rng=np.random.default_rng(seed))  # fmt: skip
            low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    out.update(low=low, high=high)
    return out


def wilcoxon_signed_rank(a: Any, b: Any, *, min_pairs: int = MIN_VOLUMES) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of paired per-volume scores ``a`` vs ``b`` (``scipy.stats.wilcoxon``).

    Pairs with a NaN are dropped. With fewer than ``min_pairs`` pairs the test is not run (statistic
    and p NaN, ``note`` says why): with 4 pairs the smallest two-sided exact p is 0.125.

    Args:
        a: per-volume scores, shape (V,), float.
        b: scores of the same V volumes.

    Returns:
        ``{"statistic", "p", "n" (pairs used), "median_diff" (median of a − b), "run" (bool), "note"}``.
    """
    x, y = _pairs(a, b)
    n = int(x.size)
    out: dict[str, Any] = {"statistic": float("nan"), "p": float("nan"), "n": n,
                           "median_diff": float(np.median(x - y)) if n else float("nan"), "run": False}  # fmt: skip
    if n < min_pairs:
        out["note"] = f"not run: {n} volume pair(s), fewer than {min_pairs}"
        return out
    if np.all(x == y):
        out["note"] = "not run: every difference is zero"
        return out
    res = stats.wilcoxon(x, y)
    out.update(statistic=float(res.statistic), p=float(res.pvalue), run=True, note="scipy.stats.wilcoxon, two-sided")
    return out
