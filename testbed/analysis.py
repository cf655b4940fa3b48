"""Uncertainty across seeds: bootstrap confidence intervals and rank tests for claimed differences."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (NaN, NaN with fewer than two values or no spread)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2 or np.all(x == x[0]):
        return (float(x[0]), float(x[0])) if len(x) else (float("nan"), float("nan"))
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, method="percentile", rng=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_ci_text(values: Sequence[float]) -> str:
    lo, hi = bootstrap_ci(values)
    return f"{np.nanmean(values):.3f} [{lo:.3f}, {hi:.3f}]"


def greater_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """One-sided Mann-Whitney U test that ``a`` tends to exceed ``b``: statistic, p-value, sizes."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    res = stats.mannwhitneyu(a, b, alternative="greater")
    return {"u": float(res.statistic), "p": float(res.pvalue), "n_a": len(a), "n_b": len(b)}


def claim(
    name_a: str, a: Sequence[float], name_b: str, b: Sequence[float], what: str, alpha: float = 0.05
) -> str:
    """A sentence stating whether ``a``'s ``what`` is higher than ``b``'s, with its test."""
    t = greater_test(a, b)
    verdict = "is higher than" if t["p"] < alpha else "is not significantly higher than"
    return (
        f"{name_a}'s {what} ({np.mean(a):.3f}) {verdict} {name_b}'s ({np.mean(b):.3f}): "
        f"one-sided Mann-Whitney U = {t['u']:.1f}, p = {t['p']:.3f}, n = {t['n_a']} vs {t['n_b']} seeds."
    )
