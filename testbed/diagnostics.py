"""ISDD diagnostics beyond the objectives' own metrics: update rows and the collapse detector."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of metric dicts, ignoring NaN (a statistic of an empty set) per key."""
    keys = {k for r in rows for k in r}
    out = {}
    for k in sorted(keys):
        vals = [r[k] for r in rows if k in r and not math.isnan(r[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def detect_collapse(
    values: Sequence[float], steps: Sequence[int], frac: float = 0.5, min_peak: float = 0.1
) -> tuple[bool, int | None]:
    """Whether a run collapsed, and the step it did.

    A run collapses when its metric (held-out EM) falls below ``frac`` times its running peak and
    never climbs back above that line until the end of the run; the collapse step is the first
    evaluation of that final stretch. Peaks under ``min_peak`` never count (nothing to lose).
    """
    vals = np.asarray(values, dtype=float)
    ok = ~np.isnan(vals)
    vals, steps = vals[ok], np.asarray(steps)[ok]
    if len(vals) < 2:
        return False, None
    peak = np.maximum.accumulate(vals)
    below = (vals < frac * peak) & (peak >= min_peak)
    if not below[-1]:
        return False, None
    above = np.flatnonzero(~below)
    start = above[-1] + 1 if above.size else 0
    return True, int(steps[start])
