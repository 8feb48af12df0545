"""Statistics of per-slice scores (STUDY §7): bootstrap confidence intervals and a paired t-test."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats


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
    """Bootstrap confidence interval of the mean (STUDY §7: 1,000 seeded resamples, 95%).

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


def paired_ttest(a: Any, b: Any) -> dict[str, float | int]:
    """Paired two-sided t-test of ``a`` vs ``b`` (STUDY §7: liver vs tumor Dice over test slices).

    Pairs where either value is NaN are dropped first (``nan_policy`` by hand, so ``n`` is known).

    Args:
        a: scores, shape (N,), float.
        b: scores of the same N slices.

    Returns:
        ``{"t", "p", "n" (pairs used), "mean_diff" (mean of a − b)}``; t and p are NaN with < 2 pairs.
    """
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"a and b must pair up, got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    mean_diff = float(np.mean(x - y)) if n else float("nan")
    if n < 2:
        return {"t": float("nan"), "p": float("nan"), "n": n, "mean_diff": mean_diff}
    res = stats.ttest_rel(x, y)
    return {"t": float(res.statistic), "p": float(res.pvalue), "n": n, "mean_diff": mean_diff}
