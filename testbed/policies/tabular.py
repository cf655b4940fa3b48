"""Tabular softmax policy: one row of logits per state of the tabular task."""

from __future__ import annotations

import torch
from torch import nn

from testbed.batch import Batch
from testbed.policies.base import log_probs_and_entropy


class TabularPolicy(nn.Module):
    grain = "tabular"

    def __init__(self, n_states: int, n_actions: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_states, n_actions))

    def start(self, batch_size: int) -> None:
        return None

    def next_logits(self, inputs: torch.Tensor, state: None = None) -> torch.Tensor:
        return self.logits[inputs]

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.states is None:
            raise ValueError("batch.states: the tabular policy needs the states actions were taken in")
        logp, entropy = log_probs_and_entropy(self.logits[batch.states], batch.tokens)
        return logp * batch.mask, entropy * batch.mask
