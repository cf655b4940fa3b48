"""Covariance-selected regularisers from "The Entropy Mechanism of RL for Reasoning LMs".

Cui et al., arXiv 2505.22617. Per masked token, cov_t = (A_t - mean A) (log pi_t - mean log pi),
means over the masked tokens of the batch. Tokens of large covariance drive entropy collapse;
both methods act on a small share of them.

Deviation, on purpose: the paper's code (and verl) samples Clip-Cov's k tokens at random among the
eligible ones; here both methods take the eligible tokens whose covariance reaches the k-th
largest (ties all included), so the functions stay pure, deterministic and invariant to batch
order. Where at most k tokens are eligible, both pick all of them.
"""

from __future__ import annotations

import math

import torch

from testbed.aggregation import aggregate
from testbed.objectives.common import log_ratio_and_ratio
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


def token_covariance(log_probs: Tensor, advantages: Tensor, mask: Tensor) -> Tensor:
    """cov_t over masked tokens; -inf on unmasked ones so they are never selected."""
    valid = mask > 0
    n = valid.sum().clamp(min=1)
    lp = log_probs.detach()
    lp_mean = (lp * mask).sum() / n
    adv_mean = (advantages * mask).sum() / n
    cov = (advantages - adv_mean) * (lp - lp_mean)
    return torch.where(valid, cov, torch.full_like(cov, -torch.inf))


def top_k(scores: Tensor, k: int, eligible: Tensor) -> Tensor:
    """Eligible tokens whose score reaches the k-th largest eligible score (all of them if fewer)."""
    n = int(eligible.sum())
    if n == 0 or k == 0:
        return torch.zeros_like(eligible)
    threshold = torch.topk(scores[eligible], min(k, n)).values[-1]
    return eligible & (scores >= threshold)


def share_count(share: float, mask: Tensor) -> int:
    """k = max(1, floor(share x masked tokens)), as the paper's code; 0 for a zero share."""
    return max(1, math.floor(share * int((mask > 0).sum()))) if share > 0 else 0


@register_objective("clip_cov")
def clip_cov(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """Clip-Cov: PPO clip, with the loss of a few high-covariance tokens removed.

    E = masked tokens that PPO's clip leaves active, with clip_cov_lb < cov_t < clip_cov_ub;
    S = the k tokens of E with the largest cov_t, k = max(1, floor(clip_cov_ratio x masked tokens));
    loss = agg( -min(r A, clip(r) A) * (0 if t in S else 1) )

    The selected tokens' loss is zeroed, value and gradient, as in the paper's code and verl.
    Cui et al., arXiv 2505.22617. Fields: clip_cov_ratio, clip_cov_lb, clip_cov_ub, eps_low,
    eps_high. Unlike the other ratio objectives its gradient at r = 1 is not the plain policy
    gradient on the selected tokens. Aggregation: token-mean.
    """
    _, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    unclipped = -ratio * advantages
    clipped = -ratio.clamp(1 - cfg.eps_low, 1 + cfg.eps_high) * advantages
    per_token = torch.maximum(unclipped, clipped)
    cov = token_covariance(log_probs, advantages, mask)
    eligible = (mask > 0) & (clipped <= unclipped) & (cov > cfg.clip_cov_lb) & (cov < cfg.clip_cov_ub)
    selected = top_k(cov, share_count(cfg.clip_cov_ratio, mask), eligible)
    n = max(int((mask > 0).sum()), 1)
    metrics = {"cov_selected_frac": float(selected.sum()) / n}
    return aggregate(per_token * (~selected), mask, cfg.agg_mode, cfg.agg_norm_const), metrics


@register_objective("kl_cov")
def kl_cov(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """KL-Cov: unclipped surrogate plus |log r| on the highest-covariance tokens.

    S = the k masked tokens of largest cov_t, k = max(1, floor(kl_cov_ratio x masked tokens));
    loss = agg( -r A + kl_cov_coef * |log r| * 1[t in S] )

    Cui et al., arXiv 2505.22617 (verl's kl_cov: kl_cov_coef is its ppo_kl_coef).
    Fields: kl_cov_ratio, kl_cov_coef. Aggregation: token-mean. pg_loss reports agg(-r A).
    """
    log_ratio, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    cov = token_covariance(log_probs, advantages, mask)
    selected = top_k(cov, share_count(cfg.kl_cov_ratio, mask), mask > 0)
    surrogate = -ratio * advantages
    per_token = surrogate + cfg.kl_cov_coef * log_ratio.abs() * selected
    n = max(int((mask > 0).sum()), 1)
    metrics = {
        "cov_selected_frac": float(selected.sum()) / n,
        "pg_loss": float(aggregate(surrogate.detach(), mask, cfg.agg_mode, cfg.agg_norm_const)),
    }
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), metrics
