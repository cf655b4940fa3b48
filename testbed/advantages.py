"""Group advantage estimators: one scalar per response from the rewards of its group.

- ``grpo``: (R - mean_g R) / (std_g R + eps), std unbiased (DeepSeekMath, arXiv 2402.03300).
- ``drgrpo``: R - mean_g R, no std (Dr. GRPO, arXiv 2503.20783).
- ``rloo``: R - mean of the *other* responses of the group (Ahmadian et al., arXiv 2402.14740).

A group whose rewards are all equal (or of size 1) carries no signal: its advantages are exactly 0,
never NaN and never rounding noise divided by eps.
"""

from __future__ import annotations

import torch

ADV_ESTIMATORS = ("grpo", "drgrpo", "rloo")


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, estimator: str = "grpo", eps: float = 1e-6
) -> torch.Tensor:
    """Advantages [N] for rewards [N] whose groups are given by integer ``group_ids`` [N]."""
    if estimator not in ADV_ESTIMATORS:
        raise ValueError(f"advantage estimator={estimator!r}: must be one of {list(ADV_ESTIMATORS)}")
    if rewards.shape != group_ids.shape or rewards.dim() != 1:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)} must be equal 1-D shapes"
        )
    rewards = rewards.to(torch.float64)
    _, idx = torch.unique(group_ids, return_inverse=True)
    n_groups = int(idx.max()) + 1 if idx.numel() else 0
    count = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, idx, torch.ones_like(rewards))
    total = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, idx, rewards)
    mean = (total / count)[idx]
    gmax = torch.full((n_groups,), -torch.inf, dtype=rewards.dtype).scatter_reduce(0, idx, rewards, "amax")
    gmin = torch.full((n_groups,), torch.inf, dtype=rewards.dtype).scatter_reduce(0, idx, rewards, "amin")
    constant = (gmax == gmin)[idx]
    n = count[idx]
    if estimator == "grpo":
        sq = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, idx, (rewards - mean) ** 2)
        std = torch.sqrt(sq[idx] / (n - 1).clamp(min=1))
        adv = (rewards - mean) / (std + eps)
    elif estimator == "drgrpo":
        adv = rewards - mean
    else:
        adv = (rewards - mean) * n / (n - 1).clamp(min=1)
    return torch.where(constant, torch.zeros_like(adv), adv).to(torch.float32)
