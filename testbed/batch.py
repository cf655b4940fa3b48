"""The one structure that crosses from rollout to training."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

# ``Batch.segment`` codes: what a written token belongs to.
OTHER, SEARCH_CALL, ANSWER = 0, 1, 2


@dataclasses.dataclass
class Batch:
    """B episodes laid out on a [B, T] grid.

    ``tokens``: what was written at each position (token ids, or actions for the tabular grain);
    ``states``: the tabular observation each action was taken in (None for tokens); ``mask``: 1 on
    tokens the policy wrote, 0 on prompt, retrieved ``<information>`` and padding tokens;
    ``behaviour_log_probs``: log-probs recorded when sampling (0 where mask is 0); ``segment``: per
    written token, ``SEARCH_CALL`` (a ``<search> ... </search>`` call, tags included, or a tabular
    search action), ``ANSWER`` (the answer segment or action) or ``OTHER``; ``searches``: search
    calls per episode.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    behaviour_log_probs: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    searches: torch.Tensor
    segment: torch.Tensor
    states: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def select(self, index: torch.Tensor) -> Batch:
        """The episodes at ``index`` (a minibatch)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        selected: dict[str, Any] = {k: (v[index] if v is not None else None) for k, v in fields.items()}
        return Batch(**selected)
