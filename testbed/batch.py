"""The one structure that crosses from rollout to training."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class Batch:
    """B episodes laid out on a [B, T] grid.

    ``tokens``: what was written at each position (token ids, or actions for the tabular grain);
    ``states``: the tabular observation each action was taken in (None for tokens); ``mask``: 1 on
    tokens the policy wrote, 0 on prompt, retrieved ``<information>`` and padding tokens;
    ``behaviour_log_probs``: log-probs recorded when sampling (0 where mask is 0).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    behaviour_log_probs: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    question_ids: torch.Tensor
    searches: torch.Tensor
    states: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, index: torch.Tensor) -> Batch:
        """The episodes at ``index`` (a minibatch)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Batch(**{k: (v[index] if v is not None else None) for k, v in fields.items()})
