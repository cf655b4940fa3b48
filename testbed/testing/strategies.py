"""Hypothesis strategies that generate inputs for policy objectives.

``objective_batches()`` draws whole batches as GRPO produces them: groups of responses to one
prompt, group-normalised advantages (zero-std groups included), ragged masks with holes where
retrieved tokens sit, empty rows or an empty mask, log-ratios from near-on-policy to extreme, and
rollout-engine log-probs that differ from the trainer's old ones by up to +-2 nats.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from hypothesis import strategies as st

from testbed.advantages import group_advantages


@dataclasses.dataclass(frozen=True)
class ObjectiveBatch:
    """One objective call's tensors, all [B, T] float64 (advantages [B])."""

    log_probs: torch.Tensor
    old_log_probs: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    ref_log_probs: torch.Tensor
    group_ids: torch.Tensor
    rollout_log_probs: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.log_probs.shape)  # type: ignore[return-value]


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def objective_batches(
    draw: st.DrawFn,
    max_groups: int = 3,
    max_group_size: int = 4,
    max_len: int = 8,
    max_abs_log_ratio: float = 50.0,
    allow_empty: bool = True,
) -> ObjectiveBatch:
    """A batch of GRPO groups with ragged masks and log-ratios up to ``max_abs_log_ratio``."""
    sizes = draw(st.lists(st.integers(1, max_group_size), min_size=1, max_size=max_groups))
    group_ids = np.repeat(np.arange(len(sizes)), sizes)
    b = len(group_ids)
    t = draw(st.integers(1, max_len))
    binary = draw(st.booleans())
    reward_st = st.sampled_from([0.0, 1.0]) if binary else _floats(-1.0, 1.0)
    rewards = np.array(draw(st.lists(reward_st, min_size=b, max_size=b)))
    advantages = group_advantages(torch.tensor(rewards), torch.tensor(group_ids)).double()

    min_len = 0 if allow_empty else 1
    lengths = np.array(draw(st.lists(st.integers(min_len, t), min_size=b, max_size=b)))
    holes = np.array(draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))).reshape(b, t)
    mask = (np.arange(t)[None, :] < lengths[:, None]) & ~(holes & draw(st.booleans()))
    if not allow_empty and not mask.any():
        mask[0, 0] = True

    n = b * t
    log_probs = np.array(draw(st.lists(_floats(-10.0, 0.0), min_size=n, max_size=n))).reshape(b, t)
    scale = draw(st.sampled_from([0.0, 0.05, 0.5, max_abs_log_ratio]))
    log_ratio = np.array(draw(st.lists(_floats(-scale, scale), min_size=n, max_size=n))).reshape(b, t)
    ref_shift = np.array(draw(st.lists(_floats(-2.0, 2.0), min_size=n, max_size=n))).reshape(b, t)
    mismatch_scale = draw(st.sampled_from([0.0, 0.01, 2.0]))
    mismatch = np.array(
        draw(st.lists(_floats(-mismatch_scale, mismatch_scale), min_size=n, max_size=n))
    ).reshape(b, t)
    return ObjectiveBatch(
        log_probs=torch.tensor(log_probs),
        old_log_probs=torch.tensor(log_probs - log_ratio),
        advantages=advantages,
        mask=torch.tensor(mask, dtype=torch.float64),
        ref_log_probs=torch.tensor(log_probs + ref_shift),
        group_ids=torch.tensor(group_ids),
        rollout_log_probs=torch.tensor(log_probs - log_ratio + mismatch),
    )
