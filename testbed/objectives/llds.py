"""LLDS: a likelihood-preserving regulariser against Lazy Likelihood Displacement.

"On GRPO Collapse in Search-R1: The Lazy Likelihood-Displacement Death Spiral", arXiv 2512.04220
(2025): the likelihood of correct (A >= 0) responses stagnates, then decays, then collapses; the fix
penalises every decrease of their likelihood between the old and the current policy.
"""

from __future__ import annotations

import torch

from testbed.aggregation import aggregate
from testbed.objectives.clip import grpo_token_loss
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


@register_objective("llds")
def llds(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """GRPO clipped surrogate plus a hinge on the likelihood loss of non-negative-advantage tokens.

    loss = L_GRPO_clip + llds_coef * (1 / N) * sum_{i: A_i >= 0} sum_t m_it max(0, log pi_old - log pi_theta)

    with N the number of masked tokens of the responses with A >= 0 (0 when there are none). The
    gate is per token (the finest of the paper's action-level gates: every token whose likelihood
    fell is pushed back up, with gradient -grad log pi_theta that does not vanish as r -> 0); at
    r = 1 the hinge is inactive, so on-policy LLDS is GRPO. SAPO (arXiv 2603.10069) is the same
    penalty with the hinge moved to r <= sapo_tau. Fields: llds_coef (lambda; 0.05-0.1 in
    re-implementations), eps_low, eps_high. Aggregation of the surrogate: token-mean; the penalty
    keeps its own normalisation. Metrics: pg_loss (surrogate), llds_penalty (unweighted),
    llds_active_frac (share of masked tokens the hinge acts on).
    """
    pg = aggregate(
        grpo_token_loss(log_probs, old_log_probs, advantages, cfg), mask, cfg.agg_mode, cfg.agg_norm_const
    )
    eligible = (mask > 0) & (advantages >= 0)
    drop = old_log_probs - log_probs
    # strict > 0: no gradient at r = 1, where the hinge's kink sits
    active = eligible & (drop.detach() > 0)
    penalty = torch.where(active, drop, torch.zeros_like(drop)).sum() / eligible.sum().clamp(min=1)
    n = max(int((mask > 0).sum()), 1)
    metrics = {
        "pg_loss": float(pg.detach()),
        "llds_penalty": float(penalty.detach()),
        "llds_active_frac": float(active.sum()) / n,
    }
    return pg + cfg.llds_coef * penalty, metrics
