"""The policy interface every grain implements."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, Self

import torch
from torch import nn

from testbed.batch import Batch


class Policy(Protocol):
    """A stochastic policy that the rollout samples from and the trainer scores.

    ``start(batch_size)`` opens a sampling state (a KV cache, or nothing); ``next_logits(inputs,
    state)`` gives the logits [B, V] of the next token (inputs: the previous token for sequence
    models, the current observation for tabular ones); ``score(batch)`` gives the log-prob and the
    entropy [B, T] of every written token under the current parameters (zero where nothing was
    sampled). ``members``: how many independent runs the policy holds (a population; 1 for a
    single run); the rows of every batch are member-major, ``rows / members`` per member.

    Every policy is an ``nn.Module``: the trainer also uses its parameters, state dict and ``to``.
    """

    grain: str
    members: int

    def start(self, batch_size: int, max_len: int | None = None) -> Any:
        """A fresh sampling state for ``batch_size`` rows; ``max_len``: the longest rollout (token
        grain), for policies whose cache has a fixed size (the others ignore it)."""
        ...

    def next_logits(self, inputs: torch.Tensor, state: Any) -> torch.Tensor: ...

    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Self: ...


def log_probs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits)[tokens] and the entropy of softmax(logits), over the last axis."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


def member_rows(rows: int, members: int) -> int:
    """Rows per member of a member-major batch of ``rows`` rows (which members must divide)."""
    if rows % members:
        raise ValueError(f"batch of {rows} rows: not divisible among {members} population members")
    return rows // members


def population_state(state: dict[str, torch.Tensor], members: int) -> dict[str, torch.Tensor]:
    """A one-member state dict repeated for ``members`` members (every member starts from it)."""
    out = {}
    for name, value in state.items():
        if value.shape[0] != 1:
            raise ValueError(f"{name}: a base state has one member, this one has {value.shape[0]}")
        out[name] = value.repeat(members, *([1] * (value.dim() - 1)))
    return out


class LayerCache:
    """One layer's keys and values [rows, heads, capacity, head_dim], written in place (no copy of the
    past at each step)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.length = capacity, 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is None or self.v is None:  # both are set together
            shape = (k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} positions is full; the rollout is longer")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


@dataclasses.dataclass
class KVCache:
    """A decoding cache: one ``LayerCache`` per layer and the next position."""

    layers: list[LayerCache]
    position: int = 0
