"""The policy interface every grain implements."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from testbed.batch import Batch


class Policy(Protocol):
    """A stochastic policy that the rollout samples from and the trainer scores.

    ``start(batch_size)`` opens a sampling state (a KV cache, or nothing); ``next_logits(inputs,
    state)`` gives the logits [B, V] of the next token (inputs: the previous token for sequence
    models, the current observation for tabular ones); ``score(batch)`` gives the log-prob and the
    entropy [B, T] of every written token under the current parameters (zero where nothing was
    sampled).
    """

    grain: str

    def start(self, batch_size: int) -> Any: ...

    def next_logits(self, inputs: torch.Tensor, state: Any) -> torch.Tensor: ...

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]: ...

    def parameters(self): ...


def log_probs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits)[tokens] and the entropy of softmax(logits), over the last axis."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy
