"""Pieces every objective shares: the importance ratio and the diagnostics each call reports.

Metric names (the columns every figure reads); ``{s}`` is ``all``, ``pos`` (A > 0) or ``neg``
(A < 0), over masked tokens; statistics of an empty set are NaN:

- ``ratio_{mean,min,p05,p50,p95}_{s}``: r = pi_theta / pi_old.
- ``low_ratio_frac_pos``: share of A > 0 tokens with r <= ``LOW_RATIO_THRESHOLD`` (the trainer's
  ``diag_ratio_threshold``), the ISDD signal; ``low_ratio_frac_nonneg``: the same over A >= 0
  tokens, the set SAPO's penalty acts on (at sapo_tau = the threshold).
- ``clip_frac_upper`` / ``clip_frac_lower``: share of tokens where PPO's clip is active
  (A > 0 and r > 1 + eps_high; A < 0 and r < 1 - eps_low), whatever the objective.
- ``zero_grad_frac_{s}``: share of tokens whose loss gradient w.r.t. their log-prob is exactly 0.
- ``approx_kl``: k3 estimate of KL(pi_old || pi_theta); ``approx_kl_k1``: its k1 estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from testbed.kl import kl_estimate

if TYPE_CHECKING:
    from testbed.objectives.registry import ObjectiveConfig

_QUANTILES = (0.05, 0.5, 0.95)
# Diagnostics count a token as collapsed at r <= this (SAPO's default tau): the default of
# ``TrainerConfig.diag_ratio_threshold``, and of the objectives' own metrics outside the trainer.
LOW_RATIO_THRESHOLD = 0.8


def quantiles(values: torch.Tensor, qs: tuple[float, ...]) -> torch.Tensor:
    """The quantiles ``qs`` of 1-D ``values`` as ``numpy.quantile`` computes them (linear
    interpolation, the same rounding), of any size; NaN for no values.

    torch.quantile refuses inputs above 2^24 elements, which one TRL/verl batch can exceed.
    """
    if values.numel() == 0:
        return torch.full((len(qs),), float("nan"), dtype=values.dtype, device=values.device)
    ordered = values.sort().values
    pos = torch.tensor(qs, dtype=torch.float64, device=values.device) * (ordered.numel() - 1)
    lo = pos.floor().long()
    t = (pos - lo).to(ordered.dtype)
    below, above = ordered[lo], ordered[(lo + 1).clamp(max=ordered.numel() - 1)]
    step = above - below
    # numpy's lerp: from below for t < 0.5, back from above otherwise
    return torch.where(t >= 0.5, above - step * (1 - t), below + step * t)


def log_ratio_and_ratio(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, cfg: ObjectiveConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """log r (clamped to +-cfg.log_ratio_clamp so that r stays finite) and r."""
    log_ratio = (log_probs - old_log_probs).clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp)
    return log_ratio, torch.exp(log_ratio)


def sign_masks(advantages: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    valid = mask > 0
    return {"all": valid, "pos": valid & (advantages > 0), "neg": valid & (advantages < 0)}


def share(selected: torch.Tensor, of: torch.Tensor) -> float:
    """Share of the ``of`` entries (a boolean mask) that are ``selected``; NaN when ``of`` is empty."""
    n = int(of.sum())
    return float((selected & of).sum()) / n if n else float("nan")


def ratio_metrics(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: ObjectiveConfig,
    low_ratio_threshold: float = LOW_RATIO_THRESHOLD,
) -> dict[str, float]:
    """Ratio statistics split by advantage sign, the ISDD signal (share of r <= the threshold),
    clip fractions and KL."""
    log_ratio = log_ratio.detach().clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp)
    ratio = torch.exp(log_ratio.double())
    out: dict[str, float] = {}
    splits = sign_masks(advantages, mask)
    for s, sel in splits.items():
        vals = ratio[sel]
        stats: list[torch.Tensor | float]
        if vals.numel():
            q = quantiles(vals, _QUANTILES)
            stats = [vals.mean(), vals.min(), q[0], q[1], q[2]]
        else:
            stats = [float("nan")] * 5
        for key, v in zip(("mean", "min", "p05", "p50", "p95"), stats, strict=True):
            out[f"ratio_{key}_{s}"] = float(v)
    low = ratio <= low_ratio_threshold
    out["low_ratio_frac_pos"] = share(low, splits["pos"])
    out["low_ratio_frac_nonneg"] = share(low, splits["all"] & (advantages >= 0))
    out["clip_frac_upper"] = share(splits["pos"] & (ratio > 1 + cfg.eps_high), splits["all"])
    out["clip_frac_lower"] = share(splits["neg"] & (ratio < 1 - cfg.eps_low), splits["all"])
    valid = splits["all"]
    n = int(valid.sum())
    old_minus_new = -log_ratio
    out["approx_kl"] = float(
        kl_estimate(old_minus_new, torch.zeros_like(log_ratio), "k3")[valid].sum() / max(n, 1)
    )
    out["approx_kl_k1"] = float(old_minus_new[valid].sum() / max(n, 1))
    return out


def zero_grad_metrics(
    body: Callable[..., tuple[torch.Tensor, dict[str, float]]],
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cfg: ObjectiveConfig,
) -> dict[str, float]:
    """Share of masked tokens whose loss gradient is exactly zero, split by advantage sign.

    Re-evaluates the body on a detached leaf, so it costs one extra elementwise pass and never
    touches the caller's graph.
    """
    leaf = log_probs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss, _ = body(leaf, old_log_probs, advantages, mask, cfg)
        (grad,) = torch.autograd.grad(loss, leaf, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(leaf)
    zero = grad == 0
    return {f"zero_grad_frac_{s}": share(zero, sel) for s, sel in sign_masks(advantages, mask).items()}
