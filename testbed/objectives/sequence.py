"""Sequence-level objectives: GSPO (sequence and token variants) and OPSM sequence masking.

Notation: r_t = pi_theta / pi_old per token, |y_i| the number of masked tokens of response i,
s_i = exp( (1/|y_i|) sum_t log r_it ) the length-normalised sequence ratio.
"""

from __future__ import annotations

import torch

from testbed.aggregation import aggregate
from testbed.objectives.clip import clipped_surrogate_loss, grpo_token_loss
from testbed.objectives.common import log_ratio_and_ratio
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


def _seq_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over tokens, [B, T] -> [B, 1]; 0 for an empty row."""
    return ((values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)


def _seq_log_ratio(log_probs: Tensor, old_log_probs: Tensor, mask: Tensor, cfg: ObjectiveConfig) -> Tensor:
    log_ratio, _ = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    return _seq_mean(log_ratio, mask)


@register_objective("gspo", default_agg="seq-mean-token-mean")
def gspo(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """GSPO, sequence variant: one clipped ratio per response.

    loss_i = -min(s_i A_i, clip(s_i, 1 - gspo_eps_low, 1 + gspo_eps_high) A_i), broadcast to the
    tokens of response i and aggregated (A_i: the mean of the response's token advantages).

    Zheng et al., "Group Sequence Policy Optimization", arXiv 2507.18071. Fields: gspo_eps_low,
    gspo_eps_high. Aggregation: seq-mean-token-mean, the paper's (one term per response).
    """
    seq_ratio = torch.exp(_seq_log_ratio(log_probs, old_log_probs, mask, cfg))
    seq_adv = _seq_mean(advantages, mask)
    per_seq = clipped_surrogate_loss(seq_ratio, seq_adv, cfg.gspo_eps_low, cfg.gspo_eps_high)
    per_token = per_seq.expand_as(log_probs)
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), {}


@register_objective("gspo_token", default_agg="seq-mean-token-mean")
def gspo_token(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """GSPO-token: the sequence ratio carried by each token, so advantages may vary per token.

    s_it = sg(s_i) * pi_theta(y_it) / sg(pi_theta(y_it));
    loss = agg( -min(s_it A_it, clip(s_it, 1 - gspo_eps_low, 1 + gspo_eps_high) A_it) )

    Its value equals the sequence variant's whenever A is constant within a response.
    Zheng et al., arXiv 2507.18071 (verl's gspo). Fields: gspo_eps_low, gspo_eps_high.
    Aggregation: seq-mean-token-mean, the paper's.
    """
    seq_log_ratio = _seq_log_ratio(log_probs, old_log_probs, mask, cfg).detach()
    token_log_ratio = seq_log_ratio + log_probs - log_probs.detach()
    per_token = clipped_surrogate_loss(
        torch.exp(token_log_ratio), advantages, cfg.gspo_eps_low, cfg.gspo_eps_high
    )
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), {}


@register_objective("opsm")
def opsm(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """PPO clip with off-policy sequence masking (OPSM).

    M_i = 0 if A_i < 0 and (1/|y_i|) sum_t log(pi_old / pi_theta) > opsm_delta, else 1;
    loss = agg( M_i * -min(r A, clip(r) A) ), the dropped responses still counted by agg().

    DeepSeek-V3.2 technical report (2025), section on off-policy sequence masking.
    Fields: opsm_delta, eps_low, eps_high.
    """
    seq_kl = -_seq_log_ratio(log_probs, old_log_probs, mask, cfg).detach()
    seq_adv = _seq_mean(advantages, mask)
    keep = ~((seq_adv < 0) & (seq_kl > cfg.opsm_delta))
    per_token = grpo_token_loss(log_probs, old_log_probs, advantages, cfg) * keep
    masked_frac = float((~keep).sum()) / max(int((mask.sum(-1) > 0).sum()), 1)
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), {"opsm_masked_seq_frac": masked_frac}
