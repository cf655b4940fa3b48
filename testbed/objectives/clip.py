"""Token-level clipped surrogates: PPO/GRPO (with clip-higher), dual-clip, two-sided clip, GPPO, CISPO.

Notation for every docstring here: r = pi_theta / pi_old per token, A the advantage, sg() stop
gradient, clip(r) = clip(r, 1 - eps_low, 1 + eps_high), agg() the configured aggregation.
"""

from __future__ import annotations

import torch

from testbed.aggregation import aggregate
from testbed.objectives.common import log_ratio_and_ratio
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


def clipped_surrogate_loss(ratio: Tensor, advantages: Tensor, eps_low: float, eps_high: float) -> Tensor:
    """Per-token PPO loss -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A)."""
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    return -torch.minimum(ratio * advantages, clipped * advantages)


def grpo_token_loss(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, cfg: ObjectiveConfig
) -> Tensor:
    _, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    return clipped_surrogate_loss(ratio, advantages, cfg.eps_low, cfg.eps_high)


@register_objective("grpo")
def grpo(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """PPO/GRPO clipped surrogate, with DAPO's clip-higher when eps_high > eps_low.

    loss = agg( -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) )

    PPO: Schulman et al., arXiv 1707.06347; GRPO: Shao et al., arXiv 2402.03300; clip-higher
    (eps_low 0.2, eps_high 0.28): DAPO, arXiv 2503.14476. Fields: eps_low, eps_high.
    Aggregation: token-mean (DAPO's, verl's default and the SAPO listing's; the GRPO paper's
    seq-mean-token-mean is TRL's loss_type="grpo").
    """
    per_token = grpo_token_loss(log_probs, old_log_probs, advantages, cfg)
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), {}


@register_objective("dual_clip")
def dual_clip(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """Dual-clip PPO: for A < 0 the loss is also bounded by -c A.

    loss_t = -min(r A, clip(r) A)                        if A >= 0
    loss_t = -max(min(r A, clip(r) A), c A)              if A < 0

    Ye et al., "Mastering Complex Control in MOBA Games", arXiv 1912.09729. Fields: eps_low,
    eps_high, dual_clip_c (c > 1, default 3).
    """
    _, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    ppo = clipped_surrogate_loss(ratio, advantages, cfg.eps_low, cfg.eps_high)
    per_token = torch.where(advantages < 0, torch.minimum(ppo, -cfg.dual_clip_c * advantages), ppo)
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), {}


@register_objective("two_sided_clip")
def two_sided_clip(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """Two-sided clipping: for A < 0 the ratio is first capped at delta.

    loss_t = -min(min(r, delta) A, clip(r) A)  if A < 0,   -min(r A, clip(r) A) otherwise.

    INTELLECT-2, arXiv 2505.07291. In value and gradient it equals dual-clip with c = delta (a
    property test checks it). Fields: eps_low, eps_high, two_sided_delta. Since delta > 1 + eps_high,
    clip(min(r, delta)) = clip(r): PPO's surrogate of the capped ratio is the loss above.
    """
    _, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    capped = torch.where(advantages < 0, ratio.clamp(max=cfg.two_sided_delta), ratio)
    per_token = clipped_surrogate_loss(capped, advantages, cfg.eps_low, cfg.eps_high)
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), {}


@register_objective("gppo")
def gppo(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """GPPO, gradient-preserving clipping: clipped tokens keep a bounded gradient.

    loss_t = -min(r A, g(r) A),  g(r) = b * r / sg(r) where r is past a bound b in {1 - eps_low,
    1 + eps_high}, else r: the value equals PPO's, the gradient of a clipped token is b A grad log pi
    instead of 0.

    Su et al. (Klear-Reasoner), arXiv 2508.07629. Fields: eps_low, eps_high.
    """
    _, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    lo, hi = 1 - cfg.eps_low, 1 + cfg.eps_high
    bound = ratio.detach().clamp(lo, hi)
    gated = bound * ratio / ratio.detach()
    per_token = -torch.minimum(ratio * advantages, gated * advantages)
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), {}


@register_objective("cispo")
def cispo(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """CISPO: clip the importance-sampling weight, never the gradient.

    loss = agg( -sg(clip(r, cispo_min, cispo_max)) A log pi_theta )

    Every token keeps a gradient. MiniMax-M1, arXiv 2506.13585: an upper bound only (defaults
    cispo_min 0, cispo_max 5, TRL's loss_type="cispo" with its recommended epsilon_high 5); verl's
    cispo clips both sides (cispo_min = 1 - clip_ratio_low, cispo_max = 1 + clip_ratio_high).
    Fields: cispo_min, cispo_max. Aggregation: token-mean (the paper's token-level sum over the
    batch's tokens).
    """
    _, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    weight = ratio.detach().clamp(cfg.cispo_min, cfg.cispo_max)
    per_token = -weight * advantages * log_probs
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), {}
