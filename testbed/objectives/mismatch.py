"""Corrections for the rollout/trainer mismatch: truncated (TIS) and masked (MIS) importance sampling.

The rollout engine (vLLM, a bf16 copy) samples with pi_rollout; the trainer recomputes pi_old on
the same tokens and the two differ, most on low-probability tokens ("When Speed Kills Stability:
Demystifying RL Collapse from the Training-Inference Mismatch", Liu, Yao et al., 2025; TIS first
in Yao et al., "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training", 2025).
Both weight PPO's clipped surrogate per token by rho = pi_old / pi_rollout, detached, as verl's
rollout correction does (``rollout_is_weights`` multiplying the per-token policy loss).
"""

from __future__ import annotations

import torch

from testbed.aggregation import aggregate
from testbed.objectives.clip import grpo_token_loss
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


def mismatch_ratio(old_log_probs: Tensor, rollout_log_probs: Tensor, cfg: ObjectiveConfig) -> Tensor:
    """rho = pi_old / pi_rollout per token, detached, log clamped to +-log_ratio_clamp."""
    log_rho = (old_log_probs - rollout_log_probs).detach()
    return torch.exp(log_rho.clamp(-cfg.log_ratio_clamp, cfg.log_ratio_clamp))


def _weighted(
    weight: Tensor,
    rho: Tensor,
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: ObjectiveConfig,
) -> tuple[Tensor, Metrics]:
    per_token = weight * grpo_token_loss(log_probs, old_log_probs, advantages, cfg)
    valid = mask > 0
    n = max(int(valid.sum()), 1)
    metrics = {
        "rollout_weight_mean": float(weight[valid].sum()) / n,
        "rollout_ratio_max": float(rho[valid].max()) if valid.any() else float("nan"),
        "rollout_ratio_min": float(rho[valid].min()) if valid.any() else float("nan"),
    }
    return aggregate(per_token, mask, cfg.agg_mode, cfg.agg_norm_const), metrics


@register_objective("tis", uses_rollout_log_probs=True)
def tis(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: ObjectiveConfig,
    rollout_log_probs: Tensor,
) -> tuple[Tensor, Metrics]:
    """Truncated importance sampling: PPO's clipped surrogate weighted by min(rho, C).

    rho_t = sg(pi_old / pi_rollout);   loss = agg( min(rho_t, tis_cap) * -min(r A, clip(r) A) )

    Yao et al. 2025 (TIS, cap C = 2 as verl's ``rollout_is_threshold`` default); Liu, Yao et al.,
    "When Speed Kills Stability" (2025). verl: ``rollout_is="token"`` with a single threshold.
    Without rollout log-probs rho = 1 and TIS is GRPO. Fields: tis_cap, eps_low, eps_high.
    Aggregation: token-mean. Metrics: rollout_weight_mean, rollout_ratio_min / _max.
    """
    rho = mismatch_ratio(old_log_probs, rollout_log_probs, cfg)
    weight = rho.clamp(max=cfg.tis_cap)
    loss, metrics = _weighted(weight, rho, log_probs, old_log_probs, advantages, mask, cfg)
    metrics["tis_truncated_frac"] = _share(rho > cfg.tis_cap, mask)
    return loss, metrics


@register_objective("mis", uses_rollout_log_probs=True)
def mis(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: ObjectiveConfig,
    rollout_log_probs: Tensor,
) -> tuple[Tensor, Metrics]:
    """Masked importance sampling: tokens whose rho leaves [mis_low, mis_high] are dropped.

    rho_t = sg(pi_old / pi_rollout);
    loss = agg( rho_t 1[mis_low <= rho_t <= mis_high] * -min(r A, clip(r) A) )

    The kept tokens keep their IS weight; dropped ones still count in agg(). Liu, Yao et al.,
    "When Speed Kills Stability" (2025, MIS); verl's token-level IcePop
    (``rollout_is_threshold="lo_hi"``). Fields: mis_low, mis_high, eps_low, eps_high.
    Aggregation: token-mean. Metrics: mis_masked_frac, rollout_weight_mean, rollout_ratio_*.
    """
    rho = mismatch_ratio(old_log_probs, rollout_log_probs, cfg)
    kept = (rho >= cfg.mis_low) & (rho <= cfg.mis_high)
    loss, metrics = _weighted(rho * kept, rho, log_probs, old_log_probs, advantages, mask, cfg)
    metrics["mis_masked_frac"] = _share(~kept, mask)
    return loss, metrics


def _share(selected: Tensor, mask: Tensor) -> float:
    valid = mask > 0
    return float((selected & valid).sum()) / max(int(valid.sum()), 1)
