"""Objectives without a hard clip: plain REINFORCE and Qwen's soft adaptive gate."""

from __future__ import annotations

import torch

from testbed.aggregation import aggregate
from testbed.objectives.common import log_ratio_and_ratio
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


@register_objective("reinforce")
def reinforce(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """Plain policy gradient with group advantages, no importance ratio.

    loss = agg( -A log pi_theta )

    Williams, "Simple statistical gradient-following algorithms", Machine Learning 8, 1992.
    Off-policy steps are not corrected: old_log_probs only feed the diagnostics.
    """
    return aggregate(-advantages * log_probs, mask, cfg.agg_mode, cfg.agg_norm_const), {}


@register_objective("soft_adaptive_gate", default_agg="seq-mean-token-mean")
def soft_adaptive_gate(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> tuple[Tensor, Metrics]:
    """Qwen's Soft Adaptive Policy Optimization: a smooth sigmoid gate instead of a hard clip.

    loss = agg( -f(r) A ),  f(r) = (4 / t) sigmoid(t (r - 1)),  t = gate_tau_pos if A > 0 else
    gate_tau_neg. f'(1) = 1, so at r = 1 the gradient is the plain policy gradient.

    Gao et al., arXiv 2511.20347. This is the method TRL and verl call "sapo"; it is NOT this
    project's ``sapo`` (Search Agent Policy Optimization, arXiv 2603.10069).
    Fields: gate_tau_pos (1.0), gate_tau_neg (1.05). Aggregation: seq-mean-token-mean, the
    paper's per-sequence mean (verl forces it; TRL's loss_type="sapo" normalises as "grpo").
    """
    _, ratio = log_ratio_and_ratio(log_probs, old_log_probs, cfg)
    temp = torch.where(
        advantages > 0,
        torch.tensor(cfg.gate_tau_pos, dtype=ratio.dtype, device=ratio.device),
        torch.tensor(cfg.gate_tau_neg, dtype=ratio.dtype, device=ratio.device),
    )
    gate = (4.0 / temp) * torch.sigmoid(temp * (ratio - 1.0))
    return aggregate(-gate * advantages, mask, cfg.agg_mode, cfg.agg_norm_const), {}
