"""Tabular softmax policy: one row of logits per state of the tabular task, per member."""

from __future__ import annotations

import torch
from torch import nn

from testbed.batch import Batch
from testbed.policies.base import log_probs_and_entropy, member_rows


class TabularPolicy(nn.Module):
    """Logits [K, states, actions]; rows of a batch are member-major (see ``TransformerPolicy``)."""

    grain = "tabular"

    def __init__(self, n_states: int, n_actions: int, members: int = 1) -> None:
        super().__init__()
        self.members = members
        self.logits = nn.Parameter(torch.zeros(members, n_states, n_actions))

    def start(self, batch_size: int, max_len: int | None = None) -> None:
        member_rows(batch_size, self.members)

    def _member(self, rows: int) -> torch.Tensor:
        return torch.arange(self.members).repeat_interleave(member_rows(rows, self.members))

    def next_logits(self, inputs: torch.Tensor, state: None = None) -> torch.Tensor:
        return self.logits[self._member(len(inputs)), inputs]

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.states is None:
            raise ValueError("batch.states: the tabular policy needs the states actions were taken in")
        logits = self.logits[self._member(len(batch))[:, None], batch.states]
        logp, entropy = log_probs_and_entropy(logits, batch.tokens)
        return logp * batch.mask, entropy * batch.mask
