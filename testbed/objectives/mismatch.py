"""Corrections for the rollout/trainer mismatch: truncated (TIS) and masked (MIS) importance sampling.

The rollout engine (vLLM, a bf16 copy) samples with pi_rollout; the trainer recomputes pi_old on
the same tokens and the two differ, most on low-probability tokens. TIS: Yao, Liu, Zhang, Dong,
Shang and Gao, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training" (2025).
MIS: Liu, Li, Fu, Wang, Liu and Shen, "When Speed Kills Stability: Demystifying RL Collapse from the
Training-Inference Mismatch" (2025), which masks whole sequences; IcePop (Ling Team, Ring-1T,
arXiv 2510.18855) masks tokens outside [0.5, 5]. Both weight PPO's clipped surrogate per token by a
detached rho, as verl's rollout correction (``rollout_is_weights`` multiplying the per-token policy
loss) and TRL's ``vllm_importance_sampling_mode`` do:

- ``rollout_is_level="token"``: rho_t = pi_old(y_t) / pi_rollout(y_t);
- ``rollout_is_level="sequence"``: rho_t = prod_{t' masked} pi_old(y_t') / pi_rollout(y_t') for every
  token of the response (TRL's ``sequence_truncate`` / ``sequence_mask``).
"""

from __future__ import annotations

import torch

from testbed.aggregation import aggregate
from testbed.objectives.clip import grpo_token_loss
from testbed.objectives.common import share
from testbed.objectives.registry import Metrics, ObjectiveConfig, register_objective

Tensor = torch.Tensor


def mismatch_ratio(
    old_log_probs: Tensor, rollout_log_probs: Tensor, mask: Tensor, cfg: ObjectiveConfig
) -> Tensor:
    """rho per token (token or sequence level), detached, its log clamped to +-log_ratio_clamp."""
    log_rho = (old_log_probs - rollout_log_probs).detach()
    if cfg.rollout_is_level == "sequence":
        log_rho = (log_rho * mask).sum(-1, keepdim=True).expand_as(log_rho)
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

    rho = sg(pi_old / pi_rollout) (per token, or per response: see the module);
    loss = agg( min(rho_t, tis_cap) * -min(r A, clip(r) A) )

    Yao et al. 2025 (TIS, cap C = 2 as verl's ``rollout_is_threshold`` default). verl:
    ``rollout_is="token"`` (or ``"sequence"``) with a single threshold; TRL: ``token_truncate`` /
    ``sequence_truncate``. Without rollout log-probs rho = 1 and TIS is GRPO. Fields: tis_cap,
    rollout_is_level, eps_low, eps_high. Aggregation: token-mean. Metrics: rollout_weight_mean,
    rollout_ratio_min / _max, tis_truncated_frac.
    """
    rho = mismatch_ratio(old_log_probs, rollout_log_probs, mask, cfg)
    weight = rho.clamp(max=cfg.tis_cap)
    loss, metrics = _weighted(weight, rho, log_probs, old_log_probs, advantages, mask, cfg)
    metrics["tis_truncated_frac"] = share(rho > cfg.tis_cap, mask > 0)
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
    """Masked importance sampling: tokens (or responses) whose rho leaves [mis_low, mis_high] drop out.

    rho = sg(pi_old / pi_rollout) (per token, or per response: see the module);
    loss = agg( rho_t 1[mis_low <= rho_t <= mis_high] * -min(r A, clip(r) A) )

    The kept tokens keep their IS weight; dropped ones still count in agg(). Liu, Li et al., "When
    Speed Kills Stability" (2025): MIS at ``rollout_is_level="sequence"`` (TRL's
    ``sequence_mask``, its default); at ``"token"`` it is IcePop, whose band [0.5, 5] is the
    default (verl's ``decoupled_token_icepop`` preset, ``rollout_is_threshold="0.5_5.0"``; TRL's
    ``token_mask``). mis_low = 0 keeps no lower bound. Fields: mis_low, mis_high,
    rollout_is_level, eps_low, eps_high. Aggregation: token-mean. Metrics: mis_masked_frac,
    rollout_weight_mean, rollout_ratio_*.
    """
    rho = mismatch_ratio(old_log_probs, rollout_log_probs, mask, cfg)
    kept = (rho >= cfg.mis_low) & (rho <= cfg.mis_high)
    loss, metrics = _weighted(rho * kept, rho, log_probs, old_log_probs, advantages, mask, cfg)
    metrics["mis_masked_frac"] = share(~kept, mask > 0)
    return loss, metrics
