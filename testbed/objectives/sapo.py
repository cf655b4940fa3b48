"""SAPO, Search Agent Policy Optimization: GRPO plus a conditional KL(pi_old || pi_theta) penalty.

"Improving Search Agent with One Line of Code", arXiv 2603.10069 (2026); the form below is the
project's reconstruction from a code listing quoted in a public write-up (see docs/TASK.md).
"""

from __future__ import annotations

import torch

from testbed.aggregation import aggregate
from testbed.kl import kl_estimate
from testbed.objectives.clip import grpo_token_loss
from testbed.objectives.common import log_ratio_and_ratio
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


def _advantage_condition(advantages: Tensor, condition: str) -> Tensor:
    if condition == "nonneg":
        return advantages >= 0
    if condition == "pos":
        return advantages > 0
    return torch.ones_like(advantages, dtype=torch.bool)


def sapo_penalty(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Tensor]:
    """The penalty P (scalar) and the boolean mask of the tokens it acts on."""
    _, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    eligible = (mask > 0) & _advantage_condition(advantages, cfg.sapo_adv_condition)
    penalized = eligible
    if cfg.sapo_token_selection == "below_tau":
        penalized = eligible & (ratio.detach() <= cfg.sapo_tau)
    # exact: k3's usual clamp would zero the gradient on the collapsed tokens (r < ~1.7e-5).
    kl = kl_estimate(old_log_probs, log_probs, cfg.sapo_kl, exact=True)
    counted = {"paper": eligible, "penalized": penalized, "all": mask > 0}[cfg.sapo_norm]
    denominator = counted.sum().clamp(min=1)
    penalty = torch.where(penalized, kl, torch.zeros_like(kl)).sum() / denominator
    return penalty, penalized


@register_objective("sapo")
def sapo(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """SAPO: the GRPO clipped surrogate plus a conditional token-level KL(pi_old || pi_theta).

    loss = L_GRPO_clip + sapo_w * (1 / N) * sum_{i: A_i >= 0} sum_t m_it 1[r_it <= sapo_tau] (-log r_it)

    with N the number of masked tokens of the responses with A >= 0. The penalty's gradient is
    -grad log pi_theta on collapsed positive tokens: unlike the surrogate's A r grad log pi, it
    does not vanish as r -> 0. With no eligible token the penalty is exactly 0.

    Ablation knobs (paper form = default): sapo_adv_condition nonneg (A >= 0) | pos (A > 0) |
    any; sapo_token_selection below_tau | all; sapo_kl k1 (-log r) | k2 | k3; sapo_norm paper (N
    as above) | penalized (N = number of penalised tokens) | all (N = every masked token, what the
    verl plug-in can count across micro-batches). Fields: sapo_tau, sapo_w, eps_low, eps_high.
    Aggregation of the surrogate: token-mean (the listing's masked mean); the penalty keeps its own
    normalisation whatever loss_agg_mode says. Metrics: pg_loss is the surrogate
    alone, sapo_penalty the unweighted penalty.
    """
    pg = aggregate(
        grpo_token_loss(log_probs, old_log_probs, advantages, cfg),
        mask,
        cfg.agg_mode,
        cfg.agg_norm_const,
    )
    penalty, penalized = sapo_penalty(log_probs, old_log_probs, advantages, mask, cfg)
    n = max(int((mask > 0).sum()), 1)
    metrics = {
        "pg_loss": float(pg.detach()),
        "sapo_penalty": float(penalty.detach()),
        "sapo_penalized_frac": float(penalized.sum()) / n,
    }
    return pg + cfg.sapo_w * penalty, metrics
