"""ISDD diagnostics beyond the objectives' own metrics: pooled mechanism signals and the collapse
detector.

The objectives report their metrics per call (a minibatch); the trainer averages those over an
update. The signals below are pooled instead: computed once per update over every token of the
rollout batch, with r = pi_new / pi_old between the policy after the update and the old log-probs:

- ``pooled_ratio_{p05,p50}_{pos,nonneg}``: ratio quantiles of A > 0 and of A >= 0 tokens.
- ``pooled_low_ratio_frac_{pos,nonneg}``: share of those tokens with r <= tau (the trainer's
  ``diag_ratio_threshold``, whatever the objective; at SAPO's own tau the ``nonneg`` share is the
  one SAPO's penalty acts on).
- ``collapsed_search_frac`` / ``collapsed_answer_frac``: of the collapsed positive tokens (A > 0,
  r <= tau), the share inside search calls and inside answers (NaN when none collapsed).
- ``lld_mean_nonneg``: mean change of log-likelihood of A >= 0 responses over the update, the LLD
  signal of arXiv 2512.04220 (policy after minus policy before, summed over each response's
  written tokens); ``lld_down_frac_nonneg``: share of those responses whose likelihood fell.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch

from testbed.batch import ANSWER, SEARCH_CALL
from testbed.objectives.common import quantiles, share


def mean_rows(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of metric dicts, ignoring NaN (a statistic of an empty set) per key."""
    keys = {k for r in rows for k in r}
    out = {}
    for k in sorted(keys):
        vals = [r[k] for r in rows if k in r and not math.isnan(r[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def isdd_signals(
    log_ratio: torch.Tensor,
    lld: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    segment: torch.Tensor,
    tau: float,
) -> dict[str, float]:
    """The pooled signals above for one run's batch: ``log_ratio`` = log pi_new - log pi_old and
    ``lld`` = log pi_new - log pi_before per token [B, T], response advantages [B]."""
    valid = mask > 0
    adv = advantages[:, None].expand_as(valid)
    ratio = log_ratio.double().exp()
    out: dict[str, float] = {}
    for name, sel in (("pos", valid & (adv > 0)), ("nonneg", valid & (adv >= 0))):
        p05, p50 = quantiles(ratio[sel], (0.05, 0.5)).tolist()
        out[f"pooled_ratio_p05_{name}"], out[f"pooled_ratio_p50_{name}"] = p05, p50
        out[f"pooled_low_ratio_frac_{name}"] = share(ratio <= tau, sel)
    collapsed = valid & (adv > 0) & (ratio <= tau)
    out["collapsed_search_frac"] = share(segment == SEARCH_CALL, collapsed)
    out["collapsed_answer_frac"] = share(segment == ANSWER, collapsed)
    nonneg = advantages >= 0
    change = (lld * mask).sum(1)[nonneg]
    out["lld_mean_nonneg"] = float(change.mean()) if change.numel() else float("nan")
    out["lld_down_frac_nonneg"] = float((change < 0).double().mean()) if change.numel() else float("nan")
    return out


def detect_collapse(
    values: Sequence[float], steps: Sequence[int], frac: float = 0.5, min_peak: float = 0.1
) -> tuple[bool, int | None]:
    """Whether a run collapsed, and the step it did.

    A run collapses when its metric (evaluation EM) falls below ``frac`` times its running peak and
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


@dataclasses.dataclass(frozen=True)
class Alarm:
    """An early warning of collapse: ``signal`` beyond ``threshold`` (below it, or above it with
    ``below=False``) for ``patience`` consecutive updates. Once fired it stays fired."""

    signal: str
    threshold: float
    below: bool = True
    patience: int = 2

    def __str__(self) -> str:
        side = "<" if self.below else ">"
        return f"{self.signal} {side} {self.threshold:g} for {self.patience} updates"

    def beyond(self, row: dict[str, float]) -> bool:
        v = row.get(self.signal, float("nan"))
        return not math.isnan(v) and (v < self.threshold if self.below else v > self.threshold)

    def fired(self, rows: Sequence[dict[str, float]]) -> list[bool]:
        """Per row (one per update, in order): has the alarm fired by then?"""
        out, streak, on = [], 0, False
        for row in rows:
            streak = streak + 1 if self.beyond(row) else 0
            on = on or streak >= self.patience
            out.append(on)
        return out

    def first_update(self, rows: Sequence[dict[str, float]]) -> int | None:
        """The update at which the alarm fires (None if never)."""
        for row, on in zip(rows, self.fired(rows), strict=True):
            if on:
                return int(row["update"])
        return None


# The default early warning (the ``isdd_alarm`` column): the likelihood of A >= 0 responses falling
# by more than one nat per update, two updates running. ``sapo-testbed report isdd`` measures it
# against the other alarms; paper_figures/RESULTS.md (claim 4) records how early and how specific.
ALARM = Alarm("lld_mean_nonneg", -1.0, below=True, patience=2)


# -- a loss that is no longer a number ------------------------------------------------------------
class NonFiniteLoss(FloatingPointError):
    """A member's loss became NaN or infinite: its run stops, and a sweep records it as failed."""


def check_loss(loss: float, step: int, member: Any, trainer: Any) -> None:
    """Raise NonFiniteLoss unless ``loss`` (of ``member``, a trainer's ``Member``, at optimizer step
    ``step`` of a trainer configured by ``trainer``) is finite. The message names the update and the
    likely field: the numeric field of the trainer or the member's objective set furthest above its
    default (a learning rate or coefficient that overflows)."""
    if math.isfinite(loss):
        return
    suspects = []
    for section, cfg in (("trainer", trainer), ("objective", member.objective)):
        for f in dataclasses.fields(cfg):
            value, default = getattr(cfg, f.name), cast(Any, f.default)
            numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (value, default))
            if numbers and value > default:
                suspects.append((value / default if default > 0 else value, f"{section}.{f.name}={value:g}"))
    likely = f"; likely {max(suspects)[1]} (furthest above its default)" if suspects else ""
    update = step // (trainer.epochs * trainer.minibatches) + 1
    raise NonFiniteLoss(f"the loss became {loss} at update {update} (seed {member.seed}){likely}")
