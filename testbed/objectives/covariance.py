"""Covariance-selected regularisers from "The Entropy Mechanism of RL for Reasoning LMs".

Cui et al., arXiv 2505.22617. Per masked token, cov_t = (A_t - mean A) (log pi_t - mean log pi),
means over the masked tokens of the batch. Tokens of large covariance drive entropy collapse;
both methods act on a small share of them.

Deviation, on purpose: the paper samples Clip-Cov's tokens at random; here both methods take the
tokens whose covariance reaches the k-th largest (ties all included), so the functions stay pure,
deterministic and invariant to batch order.
"""

from __future__ import annotations

import math

import torch

from testbed.aggregation import aggregate
from testbed.objectives.clip import grpo_token_loss
from testbed.objectives.common import log_ratio_and_ratio
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective


def token_covariance(log_probs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """cov_t over masked tokens; -inf on unmasked ones so they are never selected."""
    valid = mask > 0
    n = valid.sum().clamp(min=1)
    lp = log_probs.detach()
    lp_mean = (lp * mask).sum() / n
    adv_mean = (advantages * mask).sum() / n
    cov = (advantages - adv_mean) * (lp - lp_mean)
    return torch.where(valid, cov, torch.full_like(cov, -torch.inf))


def top_share(scores: torch.Tensor, share: float, eligible: torch.Tensor) -> torch.Tensor:
    """Eligible tokens whose score reaches the k-th largest eligible score, k = max(1, floor(share n))."""
    n = int(eligible.sum())
    if n == 0 or share == 0:
        return torch.zeros_like(eligible)
    k = max(1, math.floor(share * n))
    threshold = torch.topk(scores[eligible], k).values[-1]
    return eligible & (scores >= threshold)


@register_objective("clip_cov")
def clip_cov(
    log_probs, old_log_probs, advantages, mask, cfg: ObjectiveConfig
) -> tuple[torch.Tensor, Metrics]:
    """Clip-Cov: PPO clip, with the gradient of a few high-covariance tokens detached.

    S = top clip_cov_ratio share of tokens with cov_t in [clip_cov_lb, clip_cov_ub];
    loss = agg( -min(r A, clip(r) A) * (0 if t in S else 1) )

    Cui et al., arXiv 2505.22617. Fields: clip_cov_ratio, clip_cov_lb, clip_cov_ub, eps_low,
    eps_high. Unlike the other ratio objectives its gradient at r = 1 is not the plain policy
    gradient on the selected tokens.
    """
    cov = token_covariance(log_probs, advantages, mask)
    eligible = (mask > 0) & (cov >= cfg.clip_cov_lb) & (cov <= cfg.clip_cov_ub)
    selected = top_share(cov, cfg.clip_cov_ratio, eligible)
    per_token = grpo_token_loss(log_probs, old_log_probs, advantages, cfg) * (~selected)
    n = max(int((mask > 0).sum()), 1)
    metrics = {"cov_selected_frac": float(selected.sum()) / n}
    return aggregate(per_token, mask, cfg.loss_agg_mode, cfg.agg_norm_const), metrics


@register_objective("kl_cov")
def kl_cov(log_probs, old_log_probs, advantages, mask, cfg: ObjectiveConfig) -> tuple[torch.Tensor, Metrics]:
    """KL-Cov: unclipped surrogate plus |log r| on the highest-covariance tokens.

    S = top kl_cov_ratio share of tokens by cov_t;
    loss = agg( -r A + kl_cov_coef * |log r| * 1[t in S] )

    Cui et al., arXiv 2505.22617. Fields: kl_cov_ratio, kl_cov_coef.
    """
    log_ratio, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    cov = token_covariance(log_probs, advantages, mask)
    selected = top_share(cov, cfg.kl_cov_ratio, mask > 0)
    per_token = -ratio * advantages + cfg.kl_cov_coef * log_ratio.abs() * selected
    n = max(int((mask > 0).sum()), 1)
    metrics = {"cov_selected_frac": float(selected.sum()) / n}
    return aggregate(per_token, mask, cfg.loss_agg_mode, cfg.agg_norm_const), metrics
